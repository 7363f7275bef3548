"""The demo's small pure pieces: word insertion, ghost text, round picking, figures."""

from __future__ import annotations

import pytest
import torch

from corpora.tokenizer import WordTokenizer
from models.config import ModelConfig
from models.model import NextWordModel
from tui.charts import block, chart_line, resample
from tui.dashboard import heldout_series, human_bytes, round_lines
from tui.fleet import THIS_PHONE
from tui.ghost import ghost_completion
from tui.privacy_panel import privacy_line, server_saw
from tui.sources import (
    RoundHistory,
    SuggestionSources,
    context_tail,
    insert_word,
    pick_rounds,
)


@pytest.fixture(scope="module")
def tiny_model(tokenizer: WordTokenizer) -> NextWordModel:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, embed_dim=8, hidden_dim=8, max_len=8
    )
    return NextWordModel(config)


@pytest.mark.parametrize(
    ("text", "word", "expected"),
    [
        ("", "Hello", "Hello"),
        ("how are ", "you", "how are you"),
        ("how are yo", "you", "how are you"),
        ("I don'", "don't", "I don't"),
        ("wait,", "what", "wait, what"),
        ("ñan", "ñandú", "ñandú"),
        ("😀", "hi", "😀 hi"),
    ],
)
def test_insert_word_replaces_the_unfinished_word(text, word, expected):
    # Prepare / Execute
    result = insert_word(text, word)

    # Assert
    assert result == expected


def test_context_tail_cuts_long_text_at_a_space():
    # Prepare
    text = "abc " * 1000 + "last words"

    # Execute
    tail = context_tail(text, limit=50)

    # Assert
    assert len(tail) <= 50
    assert tail.endswith("last words")
    assert not tail.startswith(("bc", "c "))


def test_context_tail_keeps_short_text():
    # Prepare / Execute / Assert
    assert context_tail("how are", limit=50) == "how are"


@pytest.mark.parametrize(
    ("value", "word", "expected"),
    [
        ("how are yo", "you", "how are you "),
        ("how are ", "you", "how are you "),
        ("Yo", "You", "You "),
        ("you", "you", None),  # nothing to add
        ("yo", "Yes", None),  # would change what was typed
        ("how", None, None),
    ],
)
def test_ghost_completion_only_adds_after_the_value(value, word, expected):
    # Prepare / Execute
    result = ghost_completion(value, word)

    # Assert
    assert result == expected


def test_pick_rounds_prefers_wanted_then_spreads_kept_ones():
    # Prepare
    available = [0, 1, 5, 10, 20, 30, 38, 39, 40]

    # Execute
    early = pick_rounds(available, current=3)
    middle = pick_rounds(available, current=12)
    late = pick_rounds(available, current=40)

    # Assert
    assert early == [1]
    assert middle == [1, 5, 10]
    assert late == [1, 5, 20]


def test_pick_rounds_fills_in_after_a_resume_without_early_rounds():
    # Prepare / Execute
    picked = pick_rounds([10, 20, 30, 40, 41], current=42)

    # Assert
    assert picked == [10, 20, 30]


def test_human_bytes_units():
    # Prepare / Execute / Assert
    assert [human_bytes(n) for n in (980, 12_300_000, 1_250_000_000)] == [
        "980 B",
        "12.3 MB",
        "1.2 GB",
    ]


def test_heldout_series_skips_rounds_without_evaluation():
    # Prepare
    records = [
        {"server_round": 1, "heldout": {"top3": 0.1}},
        {"server_round": 2},
        {"server_round": 3, "heldout": {"top3": 0.2}},
    ]

    # Execute / Assert
    assert heldout_series(records, "top3") == [0.1, 0.2]


def test_block_uses_a_fixed_axis_not_the_data_range():
    # Prepare / Execute / Assert: 0.2 % of wobble stays at the same height.
    assert block(0.0, 0.4) == "▁"
    assert [block(v, 0.4) for v in (0.100, 0.102)] == ["▃", "▃"]
    assert block(0.4, 0.4) == block(0.9, 0.4) == "█"


def test_resample_averages_even_buckets():
    # Prepare / Execute / Assert
    assert resample([1.0, 3.0, 5.0, 7.0], 2) == [2.0, 6.0]
    assert resample([1.0, 2.0], 5) == [1.0, 2.0]


def test_chart_line_draws_curve_mark_and_value():
    # Prepare
    series = [0.0, 0.2, 0.4]

    # Execute
    line = chart_line("fleet", series, width=30, ceiling=0.4, mark=0.1).plain

    # Assert: label (8), curve padded to 13 cells, a gap, the mark, the value (7).
    assert line == "fleet   ▁▅█" + " " * 10 + " ▃" + "  40.0%"
    assert len(line) == 30


def test_round_lines_counts_lists_and_numbers():
    # Prepare
    record = {
        "server_round": 4,
        "selected": 13,
        "reported": ["a", "b"],
        "dropped": 1,
        "rejected": 0,
        "bytes_down": 2_000_000,
        "bytes_up": 1_000_000,
    }

    # Execute
    text = round_lines(record).plain

    # Assert
    assert "round 4" in text
    assert "13 phones picked, 2 in" in text
    assert "↓2.0 MB ↑1.0 MB" in text


def test_sources_cycle_through_available_models(tokenizer, tiny_model):
    # Prepare
    sources = SuggestionSources(tokenizer, tiny_model)
    sources.set_model("central", tiny_model)

    # Execute
    order = [sources.cycle(), sources.cycle(), sources.cycle()]

    # Assert
    assert order == ["central", "global", "central"]


def test_sources_never_raise_on_a_failing_model(tokenizer, tiny_model):
    # Prepare
    class Broken(torch.nn.Module):
        def forward(self, tokens, state=None):
            raise RuntimeError("boom")

    sources = SuggestionSources(tokenizer, tiny_model)
    sources.set_model("personal", Broken())
    sources.active = "personal"

    # Execute
    words = sources.suggest("how are ")

    # Assert
    assert words == []
    assert "boom" in (sources.last_error or "")


def test_round_history_shows_nothing_for_a_pruned_round(tokenizer, tiny_model):
    # Prepare
    def model_at(server_round: int) -> NextWordModel:
        raise LookupError("pruned")

    history = RoundHistory(tokenizer, model_at, lambda: [1, 5])
    history.prepare(6)

    # Execute / Assert
    assert history.rounds_before(6) == [1, 5]
    assert history.suggest(1, "how are ") == []


def test_round_history_remembers_wanted_rounds(tokenizer, tiny_model):
    # Prepare
    history = RoundHistory(tokenizer, lambda r: tiny_model, lambda: [])

    # Execute
    history.remember(1, tiny_model)
    history.remember(2, tiny_model)

    # Assert
    assert history.rounds_before(3) == [1]
    assert len(history.suggest(1, "how are ")) == 3


def test_round_history_holds_only_the_rounds_it_shows(tokenizer, tiny_model):
    # Prepare: every round kept on disk, as early in a run.
    loaded: list[int] = []

    def model_at(server_round: int) -> NextWordModel:
        loaded.append(server_round)
        return tiny_model

    kept: list[int] = []
    history = RoundHistory(tokenizer, model_at, lambda: kept)

    # Execute: rounds 1 to 30 finish one after another
    for server_round in range(1, 31):
        kept.append(server_round)
        history.prepare(server_round + 1)

    # Assert: the panel's three rounds (1, 5, 20 once they exist) are the only
    # models held, however many were loaded on the way
    assert history.rounds_before(31) == [1, 5, 20]
    assert sorted(history._in_memory()) == [1, 5, 20]
    assert len(loaded) > 3


def test_privacy_line_for_a_dp_run():
    # Prepare
    record = {"server_round": 3, "epsilon": 1.23456, "delta": 1e-5}

    # Execute
    text = privacy_line(record, target=8.0).plain

    # Assert: three significant figures, delta and target, the fleet named.
    assert text == "ε 1.23 (δ 1e-05, target 8)\nthis fleet's phones"


def test_privacy_line_for_a_simulated_deployment():
    # Prepare: the fleet's own epsilon beside the deployment whose noise it used.
    deployment = {
        "epsilon": 2.5,
        "delta": 1e-6,
        "population": 1_000_000,
        "cohort_size": 10_000,
    }
    record = {"epsilon": 40.0, "delta": 1e-5, "simulated_privacy": deployment}

    # Execute
    text = privacy_line(record, target=8.0).plain

    # Assert: the target goes with the deployment's line, not the fleet's.
    assert text == (
        "ε 40 (δ 1e-05)\nthis fleet's phones\n"
        "ε 2.5 (δ 1e-06, target 8)\n1,000,000 phones, 10,000 a round (simulated)"
    )


def test_privacy_line_without_dp():
    assert privacy_line({"server_round": 3}).plain == "no DP"


def test_server_saw_this_phones_update_without_secagg():
    # Prepare: two attacked phones, this one among them.
    record = {
        "attack": {
            "update": {
                "precision": 1.0,
                "recall": 0.5,
                "phones": 2.0,
                "words": {"abcdef123": ["x"], THIS_PHONE: ["hello", "there"]},
            },
            "sum": {"precision": 0.25, "recall": 1.0, "words": ["hello"]},
        }
    }

    # Execute
    text = server_saw(record).plain

    # Assert
    assert text == "from this phone's update\nhello there\nprecision 100%, recall 50%"


def test_server_saw_only_the_sum_under_secagg():
    # Prepare: SecAgg leaves no "update"; the sum's words are the cohort's.
    record = {"attack": {"sum": {"precision": 0.5, "recall": 0.75, "words": ["a"]}}}

    # Execute
    text = server_saw(record).plain

    # Assert
    assert text == (
        "no single update; from the round's sum\na\nprecision 50%, recall 75%"
    )


def test_server_saw_prefers_the_noisy_sum_under_dp_and_nothing_without_probe():
    # Prepare
    record = {
        "attack": {
            "sum": {"precision": 1.0, "recall": 1.0, "words": ["a"]},
            "noisy": {"precision": None, "recall": 0.0, "words": []},
        }
    }

    # Execute
    text = server_saw(record).plain

    # Assert
    assert text == (
        "no single update; from the noisy sum (DP)\n(nothing)\nprecision –, recall 0%"
    )
    assert server_saw({"server_round": 1}) is None


def test_privacy_line_labels_replayable_noise_as_no_privacy():
    # Prepare: a DP round whose noise came from the seed.
    record = {"epsilon": 1.5, "delta": 1e-5, "noise_source": "replayable (no privacy)"}

    # Execute
    text = privacy_line(record).plain

    # Assert
    assert text == "ε 1.5 (δ 1e-05)\nthis fleet's phones\nreplayable noise: no privacy"
    assert "no privacy" not in privacy_line({**record, "noise_source": "os"}).plain


def test_server_saw_a_logged_round_gives_scores_and_says_words_are_not_kept():
    # Prepare: lines read back from metrics.jsonl, which keeps no words.
    plain = {"attack": {"update": {"precision": 1.0, "recall": 0.5, "phones": 3.0}}}
    secure = {"attack": {"sum": {"precision": 0.5, "recall": 0.75}}}

    # Execute
    texts = [server_saw(plain).plain, server_saw(secure).plain]

    # Assert
    assert texts == [
        "from single phones' updates\n(the words are not kept in the run log)\n"
        "precision 100%, recall 50%",
        "no single update; from the round's sum\n"
        "(the words are not kept in the run log)\nprecision 50%, recall 75%",
    ]


def test_round_lines_under_dp_says_rejections_are_not_released():
    # Prepare: a DP line files the screen's verdicts as the simulation's truth.
    record = {
        "server_round": 2,
        "selected": 5,
        "reported": 4,
        "dropped": 1,
        "simulation_truth": {"rejected": 1},
    }

    # Execute
    text = round_lines(record).plain

    # Assert
    assert "1 dropped, rejections not released" in text
