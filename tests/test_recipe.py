"""The recipe levers: server warm-up, the unigram output bias and the local clip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from wordfreq import get_frequency_dict

from cli.main import main
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.round.strategies import StrategyConfig, initial_state, server_step
from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from models.baseline import public_unigram_log_probs
from models.config import ModelConfig
from models.metrics import combine, count_metrics
from models.model import NextWordModel
from models.rundir import RunDir
from models.weights import initial_model


def test_strategy_config_warmup_rises_linearly_then_holds() -> None:
    # Prepare
    config = StrategyConfig(name="fedavgm", server_lr=2.0, warmup_rounds=4)

    # Execute
    steps = [config.lr_at(k) for k in range(6)]

    # Assert: 2 x 1/4, 2/4, 3/4, 4/4, then 2.0 for good.
    assert steps == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert StrategyConfig(server_lr=2.0).lr_at(0) == 2.0


def test_server_step_fedavgm_warmup_scales_the_step_not_the_momentum() -> None:
    # Prepare: x = 0, Delta = 1 each round, momentum 0.9, server_lr 1.
    warm = StrategyConfig(name="fedavgm", server_lr=1.0, warmup_rounds=2)
    plain = StrategyConfig(name="fedavgm", server_lr=1.0)
    delta = [torch.tensor([1.0])]

    def two_steps(config: StrategyConfig) -> tuple[float, float, float]:
        x = [torch.tensor([0.0])]
        state = initial_state(config, x)
        x1, state = server_step(config, x, delta, state)
        x2, state = server_step(config, x1, delta, state)
        return float(x1[0]), float(x2[0]), float(state.buffers["momentum"][0])

    # Execute
    warmed, unwarmed = two_steps(warm), two_steps(plain)

    # Assert: m1 = 1, m2 = 0.9 + 1 = 1.9 either way; with warm-up
    # x1 = 0.5 * 1 = 0.5 and x2 = 0.5 + 1.0 * 1.9 = 2.4, without x1 = 1, x2 = 2.9.
    assert warmed == pytest.approx((0.5, 2.4, 1.9))
    assert unwarmed == pytest.approx((1.0, 2.9, 1.9))


def test_strategy_config_momentum_warmup_rises_from_zero_then_holds() -> None:
    # Prepare
    config = StrategyConfig(
        name="fedavgm", server_momentum=0.8, momentum_warmup_rounds=4
    )

    # Execute
    betas = [config.momentum_at(k) for k in range(6)]

    # Assert: 0.8 x 0/4, 1/4, 2/4, 3/4, 4/4, then 0.8 for good.
    assert betas == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    assert StrategyConfig(server_momentum=0.8).momentum_at(0) == 0.8


def test_server_step_fedavgm_momentum_warmup_damps_the_early_steps() -> None:
    # Prepare: x = 0, Delta = 1 each round, momentum 0.9 reached after 2 rounds.
    config = StrategyConfig(name="fedavgm", server_lr=1.0, momentum_warmup_rounds=2)
    delta = [torch.tensor([1.0])]
    x = [torch.tensor([0.0])]
    state = initial_state(config, x)

    # Execute
    xs, ms = [], []
    for _ in range(3):
        x, state = server_step(config, x, delta, state)
        xs.append(float(x[0]))
        ms.append(float(state.buffers["momentum"][0]))

    # Assert: beta = 0, 0.45, 0.9, so m = 1, 0.45 + 1 = 1.45, 0.9 x 1.45 + 1
    # = 2.305 and x = 1, 2.45, 4.755 (without warm-up: 1, 2.9, 5.61).
    assert ms == pytest.approx([1.0, 1.45, 2.305])
    assert xs == pytest.approx([1.0, 2.45, 4.755])
    assert state.steps == 3


def test_federation_config_momentum_warmup_default_and_old_runs() -> None:
    # Prepare: a config written before the field existed.
    old = {**FederationConfig().to_dict(), "strategy": "fedavgm"}

    # Execute
    restored = FederationConfig.from_dict(old)

    # Assert: new runs warm the momentum up over 5 rounds; an old run keeps
    # stepping as it did, without a warm-up.
    assert FederationConfig().strategy.momentum_warmup_rounds == 5
    assert restored.strategy.momentum_warmup_rounds == 0
    with pytest.raises(FederationConfigError, match="momentum_warmup_rounds must"):
        FederationConfig(strategy=StrategyConfig(momentum_warmup_rounds=-1))


def test_federation_config_warmup_reaches_the_strategy_and_is_checked() -> None:
    # Prepare / Execute
    config = FederationConfig(strategy=StrategyConfig(warmup_rounds=5))

    # Assert
    assert config.strategy.warmup_rounds == 5
    assert FederationConfig().strategy.warmup_rounds == 0
    with pytest.raises(FederationConfigError, match="warmup_rounds must be >= 0"):
        FederationConfig(strategy=StrategyConfig(warmup_rounds=-1))


def test_public_unigram_log_probs_follow_wordfreq() -> None:
    # Prepare: 4 specials, 32 punctuation marks and 3 words, 39 tokens in all.
    tokenizer = WordTokenizer.from_words(["the", "you", "zzqxv"])
    frequencies = get_frequency_dict("en")
    the, you, unknown = (
        tokenizer.backend.token_to_id(w) for w in ("the", "you", "zzqxv")
    )

    # Execute
    probs = public_unigram_log_probs(tokenizer).double().exp()

    # Assert: a distribution; the words keep wordfreq's ratio; a word wordfreq
    # lacks, <eos>, punctuation and <pad> get the uniform 1/39; <unk> the mass of
    # the words outside the vocabulary.
    assert tokenizer.vocab_size == 39
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    ratio = frequencies["the"] / frequencies["you"]
    assert float(probs[the] / probs[you]) == pytest.approx(ratio, rel=1e-5)
    for token_id in (unknown, tokenizer.eos_id, tokenizer.backend.token_to_id(".")):
        assert float(probs[token_id]) == pytest.approx(1 / 39, rel=1e-5)
    outside = sum(frequencies.values()) - frequencies["the"] - frequencies["you"]
    assert float(probs[tokenizer.unk_id] / probs[the]) == pytest.approx(
        outside / frequencies["the"], rel=1e-5
    )
    assert float(probs[tokenizer.pad_id]) == pytest.approx(1 / 39, rel=1e-5)


def test_initial_model_unigram_bias_changes_the_bias_alone(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    unigram = replace(tiny_model_config, output_bias_init="unigram")
    zeros = replace(tiny_model_config, output_bias_init="zeros")

    # Execute
    plain = initial_model(zeros, 0)
    biased = initial_model(unigram, 0, tokenizer)

    # Assert
    assert torch.equal(biased.output_bias, public_unigram_log_probs(tokenizer))
    assert torch.count_nonzero(plain.output_bias) == 0
    for (name, a), b in zip(plain.named_parameters(), biased.parameters(), strict=True):
        if name != "output_bias":
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs the run's tokenizer"):
        initial_model(unigram, 0)
    with pytest.raises(ValueError, match="unknown output_bias_init"):
        ModelConfig(output_bias_init="ones")
    with pytest.raises(ValueError, match="expected \\(10036,\\)"):
        NextWordModel(tiny_model_config, output_bias=torch.zeros(3))


def test_unigram_bias_lowers_the_untrained_heldout_loss(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare: the default model shape on the small slice's held-out users.
    texts = small_splits.heldout_texts()
    unigram = ModelConfig(output_bias_init="unigram")

    # Execute
    zeros = ModelConfig(output_bias_init="zeros")
    plain = count_metrics(
        initial_model(zeros, 0), tokenizer, texts, max_len=32, keystroke_texts=0
    )
    biased = count_metrics(
        initial_model(unigram, 0, tokenizer),
        tokenizer,
        texts,
        max_len=32,
        keystroke_texts=0,
    )

    # Assert: the untrained model is about uniform (perplexity near V = 10,036);
    # public frequencies alone cut its perplexity by more than 5x.
    assert biased.loss_targets > 1000
    plain_perplexity = combine([plain]).perplexity
    assert plain_perplexity == pytest.approx(10_036, rel=0.05)
    assert combine([biased]).perplexity < plain_perplexity / 5


def test_simulate_cli_recipe_flags_reach_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a tiny model on 20 users, one round.
    out = str(tmp_path / "run")
    flags = ["--server-warmup-rounds", "3", "--clip-norm", "5.0",
             "--output-bias-init", "unigram",
             "--server-momentum-warmup-rounds", "4"]  # fmt: skip
    tiny = ["--max-users", "20", "--hidden-dim", "16", "--embed-dim", "8",
            "--rounds", "1", "--clients-per-round", "3",
            "--eval-every", "0"]  # fmt: skip

    # Execute
    created = main(["simulate", "--out", out, *tiny, *flags])
    bad_warmup = main(["simulate", "--out", str(tmp_path / "x"), *tiny,
                       "--server-warmup-rounds", "-2"])  # fmt: skip
    bad_clip = main(["simulate", "--out", str(tmp_path / "y"), *tiny,
                     "--clip-norm", "-1"])  # fmt: skip

    # Assert
    config = RunDir(out).read_config()
    err = capsys.readouterr().err
    assert (created, bad_warmup, bad_clip) == (0, 2, 2)
    assert config["federation"]["strategy"]["warmup_rounds"] == 3
    assert config["federation"]["strategy"]["momentum_warmup_rounds"] == 4
    assert config["federation"]["local"]["grad_clip_norm"] == 5.0
    assert config["model"]["output_bias_init"] == "unigram"
    assert "warmup_rounds must be >= 0" in err and "clip_norm must be >= 0" in err
    assert "Traceback" not in err
