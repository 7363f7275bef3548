"""`fedtype compare`: summaries of every run kind, the report, plots and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.compare_report import markdown, row, table_rows
from cli.compare_runs import load_run, load_runs
from cli.main import main
from models.rundir import RunDirError


def metrics(top3: float, tokens: int, **extra: Any) -> dict[str, Any]:
    """A metrics line with held-out and future results."""
    scores = {
        "top1": top3 / 2,
        "top3": top3,
        "perplexity": 150.0,
        "keystroke_savings": 0.4,
        "num_targets": 100,
        "num_messages": 10,
    }
    return {
        "tokens_total": tokens,
        "wall_seconds_total": tokens / 1000,
        "bytes_total": 2 * tokens,
        "heldout": scores,
        "future": scores,
        **extra,
    }


def write_run(path: Path, config: dict[str, Any], lines: list[dict[str, Any]]) -> str:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


@pytest.fixture
def three_runs(tmp_path: Path) -> list[str]:
    """A federated, a central and a local-only run with hand-written metrics."""
    federated = write_run(
        tmp_path / "fed",
        {"kind": "federated", "federation": {"strategy": "fedavg", "rounds": 3}},
        [
            {"server_round": 1, "reported": 5, "tokens_total": 100},
            metrics(0.2, 200, server_round=2, reported=4),
            {"server_round": 3, "reported": 6, "tokens_total": 300},
        ],
    )
    central = write_run(
        tmp_path / "cen",
        {"kind": "central", "workers": 2, "training": {"lr": 0.002}},
        [metrics(0.25, 1000, step=10), metrics(0.3, 2000, step=20)],
    )
    local = write_run(
        tmp_path / "loc",
        {"kind": "local-only", "local_only": {"local_epochs": 5}},
        [metrics(0.1, 500, users_trained=3)],
    )
    return [federated, central, local]


def test_load_run_federated_counts_reports_up_to_the_evaluated_round(
    three_runs: list[str],
) -> None:
    # Execute
    summary = load_run(three_runs[0])
    # Assert: the last evaluated round is 2; the reports of rounds 1 and 2 count.
    assert summary.kind == "federated"
    assert summary.rounds == 2 and summary.phone_reports == 5 + 4
    assert [p.tokens for p in summary.curve] == [200]
    assert "fedavg" in summary.setting


def test_row_formats_the_last_evaluation(three_runs: list[str]) -> None:
    # Execute
    cells = row(load_run(three_runs[1]))
    # Assert: 30 % top-3, 15 % top-1, 2,000 tokens in 2 s, 4,000 bytes.
    assert cells == [
        "cen", "central", "15.00%", "30.00%", "150.0", "40.00%", "15.00%",
        "30.00%", "150.0", "40.00%", "—", "2,000", "2 s", "4.0 KB", "-",
        *["—"] * 6, "0.100 s/step",
    ]  # fmt: skip


def test_row_privacy_columns_average_the_attack_and_read_exposure(
    tmp_path: Path,
) -> None:
    # Prepare: a DP run of 2 rounds in 8 s; the attack over both rounds.
    exposure = {"by_repeats": {"1": 0.5, "16": 6.25}, "controls": 0.75}
    lines = [
        {"server_round": 1, "reported": 3,
         "attack": {"update": {"precision": 1.0, "recall": 0.5},
                    "noisy": {"precision": 0.2, "recall": 0.1}}},
        {**metrics(0.2, 8000, server_round=2, reported=3, epsilon=1.5,
                   delta=1e-5, exposure=exposure),
         "attack": {"update": {"precision": 0.5, "recall": 0.25},
                    "noisy": {"precision": 0.4, "recall": 0.3}}},
    ]  # fmt: skip
    config = {"kind": "federated", "federation": {"privacy": {"dp": {}}}}
    path = write_run(tmp_path / "dp", config, lines)

    # Execute
    cells = row(load_run(path))[-7:]

    # Assert: means (1 + 0.5) / 2 = 0.75, (0.5 + 0.25) / 2 = 0.375 ~ 0.38.
    assert cells == [
        "1.50 (1e-05)", "0.75 / 0.38", "—", "0.30 / 0.20",
        "6.25 bits (x16)", "0.75 bits", "4.0 s",
    ]  # fmt: skip


def test_markdown_has_a_row_and_setting_per_run_and_the_plots(
    three_runs: list[str],
) -> None:
    # Prepare
    summaries = [load_run(p) for p in three_runs]
    # Execute
    text = markdown(summaries, ["out/top3_vs_tokens.png"])
    # Assert
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 3
    assert "| fed | federated |" in text and "| loc | local-only |" in text
    assert "2 worker(s)" in text and "5 epochs of SGD" in text
    assert "![top3_vs_tokens](top3_vs_tokens.png)" in text


def test_cli_compare_writes_report_and_plots(
    three_runs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    status = main(["compare", *three_runs, "--out", str(tmp_path / "report")])
    # Assert
    assert status == 0
    names = ("report.md", "top3_vs_tokens.png", "top3_vs_wall.png")
    for name in (*names, "top3_vs_epsilon.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert "held-out top-3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("config", "lines", "message"),
    [
        (None, None, "no such run directory"),
        ("{not json", "", "unreadable"),
        ('{"kind": "mystery"}', "", "unknown run kind 'mystery'"),
        ('{"kind": "train"}', '{"step": 1}\n', "no evaluation recorded yet"),
        ('{"kind": "train"}', '{"heldout": {"top3": 0.1}}\n', "malformed line"),
        ("[1, 2]", "", "not a JSON object"),
    ],
)
def test_cli_compare_bad_run_dir_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: str | None,
    lines: str | None,
    message: str,
) -> None:
    # Prepare
    path = tmp_path / "run"
    if config is not None:
        path.mkdir()
        (path / "config.json").write_text(config)
        (path / "metrics.jsonl").write_text(lines or "")
    # Execute
    status = main(["compare", str(path)])
    # Assert
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


def test_load_run_skips_a_torn_last_metrics_line(tmp_path: Path) -> None:
    # Prepare
    path = write_run(tmp_path / "run", {"kind": "train"}, [metrics(0.2, 10)])
    with open(Path(path) / "metrics.jsonl", "a") as handle:
        handle.write('{"tokens_total": 20, "heldo')
    # Execute
    summary = load_run(path)
    # Assert
    assert [p.tokens for p in summary.curve] == [10]
    with pytest.raises(RunDirError):
        load_run(str(tmp_path / "missing"))


def personalization(server_round: int = 2) -> dict[str, Any]:
    """A report of 4 phones for the fixture's federated run (round 2, 100 future
    targets in 10 messages): the gated models hit 12 and 25 of the 100 targets
    at top-1 and top-3; the phones' top-1 gains are +100 %, 0 %, 0 % and -50 %.
    """
    pooled = {"perplexity": 150.0, "keystroke_savings": 0.4, "num_targets": 100,
              "num_messages": 10}  # fmt: skip
    gain = {"mean_top1": (1.0 + 0.0 + 0.0 - 0.5) / 4, "median_top1": 0.0,
            "mean_top3": 0.25, "median_top3": 0.0, "hurt_share": 1 / 4,
            "helped_share": 1 / 4, "phones": 4, "no_baseline": 0}  # fmt: skip
    return {
        "server_round": server_round,
        "phones": 4,
        "kept_share": 0.75,
        "settings": {"trained": "all"},
        "future": {
            "global": {**pooled, "top1": 0.10, "top3": 0.20},
            "personal": {**pooled, "top1": 0.11, "top3": 0.24},
            "gated": {
                **pooled,
                "top1": 0.12,
                "top3": 0.25,
                "perplexity": 140.0,
                "keystroke_savings": 0.45,
            },
        },  # fmt: skip
        "gain": {"personal": gain, "gated": gain},
        "per_phone": [],
    }


def test_table_rows_put_the_personalised_row_beside_the_federated_one(
    three_runs: list[str],
) -> None:
    # Prepare
    report = json.dumps(personalization())
    (Path(three_runs[0]) / "personalization.json").write_text(report)

    # Execute
    rows = table_rows(load_runs(three_runs))

    # Assert: 12/100 top-1, 25/100 top-3; mean gain (1 + 0 + 0 - 0.5) / 4, 1 of 4
    # phones hurt; the central and local-only runs have no such row.
    assert [cells[1] for cells in rows] == [
        "federated", "federated + personalised", "central", "local-only",
    ]  # fmt: skip
    assert rows[1] == [
        "fed + personalised (gated)", "federated + personalised",
        *["—"] * 4, "12.00%", "25.00%", "140.0", "45.00%", "+12.50% / 25.00%",
        *["—"] * 3, "2 / 4 phones", *["—"] * 7,
    ]  # fmt: skip
    assert rows[0][6:11] == ["10.00%", "20.00%", "150.0", "40.00%", "—"]


@pytest.fixture
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough that no cell of the compare table wraps."""
    monkeypatch.setenv("COLUMNS", "200")


def test_cli_compare_shows_the_personalised_row(
    three_runs: list[str],
    capsys: pytest.CaptureFixture[str],
    wide_terminal: None,
) -> None:
    # Prepare
    report = json.dumps(personalization())
    (Path(three_runs[0]) / "personalization.json").write_text(report)

    # Execute
    status = main(["compare", three_runs[0]])

    # Assert
    out = capsys.readouterr().out
    assert status == 0
    assert "fed + personalised (gated)" in out
    assert "+12.50% / 25.00%" in out and "2 / 4 phones" in out


def test_cli_compare_without_a_personalisation_report_has_no_row(
    three_runs: list[str],
    capsys: pytest.CaptureFixture[str],
    wide_terminal: None,
) -> None:
    # Execute
    status = main(["compare", three_runs[0]])

    # Assert
    captured = capsys.readouterr()
    assert status == 0 and "personalised" not in captured.out
    assert captured.err == ""
    assert len(table_rows(load_runs([three_runs[0]]))) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "unreadable"),
        ("[1, 2]", "not a personalisation report"),
        ('{"server_round": 2, "phones": 4}', "not a personalisation report (no"),
        (json.dumps({**personalization(), "phones": "four"}), "'four' is not a"),
        (json.dumps(personalization(server_round=1)), "round 1 on 100 future"),
    ],
)
def test_cli_compare_bad_personalisation_report_one_note_and_no_row(
    three_runs: list[str],
    capsys: pytest.CaptureFixture[str],
    wide_terminal: None,
    text: str,
    message: str,
) -> None:
    # Prepare
    path = Path(three_runs[0]) / "personalization.json"
    path.write_text(text)

    # Execute
    status = main(["compare", three_runs[0]])

    # Assert: the run's own row still prints; one note names the file.
    captured = capsys.readouterr()
    notes = captured.err.splitlines()
    assert status == 0 and "personalised (gated)" not in captured.out
    assert "held-out top-3" in captured.out
    assert len(notes) == 1 and notes[0].startswith(f"note: {path}")
    assert message in notes[0] and "left out" in notes[0]
    assert "Traceback" not in captured.err


def test_compare_labels_a_replayable_noise_run_as_without_privacy(
    tmp_path: Path,
) -> None:
    # Prepare: two DP runs, one with noise from the seed.
    config = {"kind": "federated", "federation": {"strategy": "fedavg", "rounds": 1}}
    line = metrics(0.2, 200, server_round=1, reported=4, epsilon=2.0, delta=1e-5)
    os_run = write_run(tmp_path / "os", config, [{**line, "noise_source": "os"}])
    seeded = write_run(
        tmp_path / "seeded",
        config,
        [{**line, "noise_source": "replayable (no privacy)"}],
    )

    # Execute
    rows = table_rows(load_runs([os_run, seeded]))

    # Assert: the label and the epsilon cell say so, for that run only.
    assert rows[0][0] == "os" and "no privacy" not in " ".join(rows[0])
    assert rows[1][0] == "seeded (replayable noise: no privacy)"
    assert any(cell.endswith("; replayable noise: no privacy") for cell in rows[1])


def test_kind_note_names_each_corner_and_its_protections(tmp_path: Path) -> None:
    # Prepare: local-only, central, and federated runs unprotected, SecAgg, SecAgg+DP
    from cli.compare_plots import kind_note

    plain = {"kind": "federated", "federation": {"privacy": {}}}
    secagg = {
        "kind": "federated",
        "federation": {"privacy": {"secure_aggregation": True}},
    }
    both = {
        "kind": "federated",
        "federation": {"privacy": {"secure_aggregation": True, "dp": {"c": 1}}},
    }
    configs = {
        "loc": {"kind": "local-only"},
        "cen": {"kind": "central"},
        "plain": plain,
        "sa": secagg,
        "both": both,
    }
    paths = [
        write_run(tmp_path / name, config, [metrics(0.2, 100, server_round=1)])
        for name, config in configs.items()
    ]

    # Execute
    notes = [kind_note(load_run(path)) for path in paths]

    # Assert
    assert notes == [
        "local-only, nothing merged",
        "central, pooled data",
        "federated, unprotected",
        "federated + SecAgg",
        "federated + SecAgg + DP",
    ]


def test_epsilon_ticks_are_round_numbers_within_the_range() -> None:
    # Prepare
    from cli.compare_plots import epsilon_ticks

    # Execute
    ticks = epsilon_ticks([8.30958, 2.5])

    # Assert: no tick at 8.30958 itself, all in [0, 8.31]
    assert ticks == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_mean_curve_of_two_seeds_gives_mean_and_sd(tmp_path: Path) -> None:
    # Prepare: one recipe, two seeds: top-3 20 % and 30 % at 100 tokens
    from cli.compare_plots import mean_curve, recipes

    config = {"kind": "central", "training": {"lr": 0.002}}
    paths = [
        write_run(tmp_path / "s1", config, [metrics(0.2, 100, step=1)]),
        write_run(tmp_path / "s2", config, [metrics(0.3, 100, step=1)]),
    ]

    # Execute
    groups = recipes(load_runs(paths))
    xs, ys, sds = mean_curve(groups[0], "tokens")

    # Assert: sd of (20, 30) is 7.071...
    assert len(groups) == 1
    assert xs == [100.0]
    assert ys == pytest.approx([25.0])
    assert sds == pytest.approx([7.0710678])


def test_cli_compare_skips_a_run_without_evaluation(
    three_runs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a DP run stopped by its budget before its first evaluation
    stopped = write_run(
        tmp_path / "budget",
        {"kind": "federated", "federation": {"privacy": {"dp": {"c": 1}}}},
        [{"server_round": 1, "reported": 5, "tokens_total": 100, "epsilon": 3.0}],
    )

    # Execute
    code = main(["compare", *three_runs, stopped, "--out", str(tmp_path / "r")])

    # Assert: the three others compared, plotted against rounds and bytes too
    out, err = capsys.readouterr()
    assert code == 0
    assert f"{stopped}: left out, no evaluation recorded yet" in err
    assert (tmp_path / "r" / "top3_vs_rounds.png").stat().st_size > 0
    assert (tmp_path / "r" / "top3_vs_bytes.png").stat().st_size > 0
    assert "budget" not in out
