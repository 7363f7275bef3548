"""Tests of `fedtype export` and the onnx engine: the exported graph's logits and
strips equal PyTorch's, the manifest's checksums, the command's one-line errors.

One export of a tiny model per module (each takes seconds): the CLI writes it
from a hand-made run directory, and every parity test reads it.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from corpora.corpus import CorpusSplits
from corpora.samples import heldout_sample
from corpora.tokenizer import WordTokenizer
from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.export_manifest import ExportError, read_manifest
from models.model import NextWordModel
from models.onnx_engine import ExportedModel, load_exported
from models.parity import strip_agreement, strips, typed_prefixes
from models.rundir import RunDir
from models.suggest import Suggester

STEP = 3


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory,
    tokenizer: WordTokenizer,
    tiny_model_config: ModelConfig,
) -> RunDir:
    """A federated run holding one checkpoint (round 3) of a seeded tiny model."""
    run = RunDir(tmp_path_factory.mktemp("export") / "run")
    run.create({"kind": "federated"}, tokenizer)
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    with torch.no_grad():  # a spread-out bias, as training leaves it
        model.output_bias.normal_(0.0, 1.0)
    save_checkpoint(
        run.checkpoint_path(STEP),
        model,
        tiny_model_config,
        vocab_fingerprint=tokenizer.fingerprint(),
    )
    return run


def export_cli(*argv: str) -> tuple[int, str]:
    """Exit status and stdout of `fedtype export ARGV`."""
    out = StringIO()
    with redirect_stdout(out):
        code = main(["export", *argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def fp32_dir(run_dir: RunDir) -> Path:
    out = run_dir.path.parent / "fp32"
    code, _ = export_cli("--run", str(run_dir.path), "--out", str(out))
    assert code == 0
    return out


@pytest.fixture(scope="module")
def exported(fp32_dir: Path) -> ExportedModel:
    return load_exported(fp32_dir)


@pytest.fixture(scope="module")
def torch_model(run_dir: RunDir) -> NextWordModel:
    return run_dir.load_model(STEP)[0].eval()


def test_export_fp32_logits_within_1e4_of_torch(
    exported: ExportedModel, torch_model: NextWordModel
) -> None:
    # Prepare: a seeded batch of token ids and a seeded LSTM state.
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(
        0, torch_model.config.vocab_size, (4, 9), generator=generator
    )
    state = tuple(torch.randn(1, 4, 32, generator=generator) for _ in range(2))

    # Execute
    with torch.inference_mode():
        expected, (h, c) = torch_model(tokens, state)
        found, (h_onnx, c_onnx) = exported.model(tokens, state)

    # Assert
    assert found.shape == (4, 9, torch_model.config.vocab_size)
    assert (found - expected).abs().max() <= 1e-4
    assert (h_onnx - h).abs().max() <= 1e-5 and (c_onnx - c).abs().max() <= 1e-5


def test_export_one_step_a_token_equals_the_whole_context(
    exported: ExportedModel, torch_model: NextWordModel
) -> None:
    # Prepare
    tokens = torch.tensor([[2, 40, 41, 42, 43]])  # <bos> and four words

    # Execute: the phone's way, one token a call, the state carried between.
    state = None
    for t in range(tokens.shape[1]):
        logits, state = exported.model(tokens[:, t : t + 1], state)
    with torch.inference_mode():
        expected, _ = torch_model(tokens)

    # Assert
    assert (logits[0, -1] - expected[0, -1]).abs().max() <= 1e-4


def test_export_strip_identical_on_typed_prefixes(
    exported: ExportedModel,
    torch_model: NextWordModel,
    tokenizer: WordTokenizer,
    small_splits: CorpusSplits,
) -> None:
    # Prepare: 300 prefixes of held-out messages, as a person types them.
    prefixes = typed_prefixes(heldout_sample(small_splits, 40), 300)

    # Execute
    expected = strips(Suggester(torch_model, tokenizer), prefixes)
    found = strips(Suggester(exported.model, exported.tokenizer), prefixes)

    # Assert
    assert len(prefixes) == 300
    assert strip_agreement(found, expected) == 1.0


def test_typed_prefixes_end_after_a_letter_or_a_space() -> None:
    # Execute
    prefixes = typed_prefixes(["hi, yo"], None)

    # Assert: "hi," ends after a comma, so it is never on screen as a prefix.
    assert prefixes == ["h", "hi", "hi, ", "hi, y", "hi, yo"]


def test_strip_agreement_hand_computed() -> None:
    # Execute
    share = strip_agreement([["a", "b"], ["c"], []], [["a", "b"], ["d"], []])

    # Assert
    assert share == pytest.approx(2 / 3)


def test_export_manifest_checksums_are_the_files_sha256(fp32_dir: Path) -> None:
    # Execute
    manifest = read_manifest(fp32_dir)

    # Assert
    assert manifest["source"]["server_round"] == STEP
    assert manifest["model"]["hidden_dim"] == 32 and manifest["opset"] == 18
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "vocab.json"}
    for name, entry in manifest["files"].items():
        data = (fp32_dir / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_export_damaged_file_is_refused_naming_it(
    fp32_dir: Path, tmp_path: Path
) -> None:
    # Prepare: a copy of the export whose vocabulary lost its last byte.
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in fp32_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    (copy / "vocab.json").write_bytes((fp32_dir / "vocab.json").read_bytes()[:-1])

    # Execute / Assert
    with pytest.raises(ExportError, match="vocab.json: sha256 differs"):
        load_exported(copy)


def test_export_vocab_json_maps_ids_to_tokens(
    fp32_dir: Path, tokenizer: WordTokenizer
) -> None:
    # Execute
    vocab = json.loads((fp32_dir / "vocab.json").read_text())

    # Assert
    assert vocab["tokens"] == tokenizer.id_to_token
    assert vocab["bos_id"] == tokenizer.bos_id == vocab["tokens"].index("<bos>")


def test_export_int8_is_smaller_and_close(
    run_dir: RunDir, fp32_dir: Path, torch_model: NextWordModel
) -> None:
    # Prepare
    out = run_dir.path.parent / "int8"

    # Execute
    code, printed = export_cli("--run", str(run_dir.path), "--out", str(out), "--int8")
    int8 = load_exported(out)
    tokens = torch.tensor([[2, 40, 41, 42, 43]])
    logits, _ = int8.model(tokens)
    with torch.inference_mode():
        expected, _ = torch_model(tokens)

    # Assert: int8 weights are a quarter of the fp32 bytes, plus the graph.
    assert code == 0 and "(int8)" in printed
    assert int8.manifest["precision"] == "int8"
    size = (out / "model.int8.onnx").stat().st_size
    assert size < 0.35 * (fp32_dir / "model.onnx").stat().st_size
    assert 0 < (logits - expected).abs().max() < 0.05


def test_cli_suggest_onnx_engine_prints_the_torch_strip(
    run_dir: RunDir, fp32_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    torch_code = main(["suggest", "--run", str(run_dir.path), "how are "])
    torch_words = capsys.readouterr().out
    onnx_code = main(["suggest", "--engine", "onnx", str(fp32_dir), "how are "])
    onnx_words = capsys.readouterr().out

    # Assert
    assert torch_code == onnx_code == 0
    assert len(onnx_words.splitlines()) == 3 and onnx_words == torch_words


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--run", "{tmp}/none"], "no such run directory", id="no_run"),
        pytest.param(
            ["--run", "{run}", "--step", "7"], "no checkpoint for step 7", id="bad_step"
        ),
        pytest.param(
            ["--run", "{run}", "--out", "{run}"],
            "is the run directory",
            id="out_is_run",
        ),
        pytest.param(
            ["--run", "{run}", "--out", "{tmp}/busy"],
            "holds other files",
            id="out_not_export",
        ),
    ],
)
def test_cli_export_errors_are_one_line_exit_2(
    run_dir: RunDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    # Prepare: a folder holding someone's file, which an export must not touch.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    argv = [a.format(tmp=tmp_path, run=run_dir.path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]

    # Execute
    code = main(["export", *argv])
    err = capsys.readouterr().err

    # Assert
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "out").exists()


def test_cli_suggest_onnx_without_directory_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Execute
    code = main(["suggest", "--engine", "onnx", "how are "])

    # Assert
    assert code == 2
    assert "needs an export directory" in capsys.readouterr().err


def test_onnx_engine_logits_are_numpy_free_of_nan(exported: ExportedModel) -> None:
    # Execute
    logits, h, c = exported.model.step(
        np.array([[2]], dtype=np.int64),
        np.zeros((1, 1, 32), np.float32),
        np.zeros((1, 1, 32), np.float32),
    )

    # Assert
    assert logits.shape == (1, 1, exported.tokenizer.vocab_size)
    assert np.isfinite(logits).all() and h.shape == c.shape == (1, 1, 32)
