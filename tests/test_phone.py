"""A phone's local training, its update, its step count, faults and storage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import make_phone, seeded_parameters

from corpora.corpus import CorpusSplits
from corpora.tokenizer import WordTokenizer
from device_sim.config import FleetConfig, FleetConfigError, LocalTrainingConfig
from device_sim.phone import ClientReport, Phone, PhoneStoreError
from device_sim.profile import draw_profile, work_seconds
from models.batching import PackedSequences, encode_messages
from models.config import ModelConfig
from models.model import NextWordModel
from models.weights import Parameters, load_parameters, parameters_of

TEXTS = ("hello there how are you", "i am fine thanks", "what are you doing today")


def train_in_round_one(
    model: NextWordModel,
    global_parameters: Parameters,
    tokenizer: WordTokenizer,
    config: LocalTrainingConfig,
    texts: tuple[str, ...] = TEXTS,
) -> ClientReport:
    """The round-1 report of a phone holding `texts`, trained in `model`."""
    return make_phone(texts).train(
        model, global_parameters, tokenizer=tokenizer, config=config, server_round=1
    )


def test_phone_train_update_is_local_minus_global(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    global_parameters = seeded_parameters(tiny_model_config)
    scratch = NextWordModel(tiny_model_config)
    config = LocalTrainingConfig(max_local_steps=3)

    # Execute
    report = train_in_round_one(scratch, global_parameters, tokenizer, config)

    # Assert: the scratch model holds the local weights = global + update.
    assert report.client_id == "p" and report.num_examples == 3
    assert report.metrics.steps == 1
    assert report.metrics.loss_after < report.metrics.loss_before
    for g, u, local in zip(
        global_parameters, report.update, scratch.parameters(), strict=True
    ):
        torch.testing.assert_close(g + u, local.detach(), rtol=0, atol=1e-6)


def test_phone_train_starts_from_the_received_weights(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare: the scratch model holds stale weights from another phone.
    global_parameters = seeded_parameters(tiny_model_config)
    stale = NextWordModel(tiny_model_config)
    fresh = NextWordModel(tiny_model_config)
    config = LocalTrainingConfig()

    # Execute
    a = train_in_round_one(stale, global_parameters, tokenizer, config)
    b = train_in_round_one(fresh, global_parameters, tokenizer, config)

    # Assert
    for x, y in zip(a.update, b.update, strict=True):
        assert torch.equal(x, y)


def test_phone_local_steps_follows_budget_and_cap(
    small_splits: CorpusSplits, tokenizer: WordTokenizer
) -> None:
    # Prepare: the largest user of the slice.
    user = max(small_splits.training_users.values(), key=lambda u: len(u.train))
    phone = Phone(
        user.user,
        train=user.train,
        future=user.future,
        profile=draw_profile(0, user.user, FleetConfig()),
        seed=0,
    )
    count = len(encode_messages(tokenizer, list(user.train), 16))

    # Execute
    capped = phone.local_steps(tokenizer, LocalTrainingConfig(max_local_steps=4), 16)
    two_epochs = phone.local_steps(
        tokenizer, LocalTrainingConfig(max_local_steps=None, local_epochs=2), 16
    )
    budget = LocalTrainingConfig(max_local_steps=5, local_epochs=2).sequence_budget()

    # Assert: 5 steps over 2 epochs -> 2 batches of 16 sequences.
    assert count > 4 * 16
    assert capped == 4
    assert two_epochs == 2 * -(-count // 16)
    assert budget == 32


def test_phone_fedprox_keeps_update_closer_to_global(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    global_parameters = seeded_parameters(tiny_model_config)
    scratch = NextWordModel(tiny_model_config)
    texts = TEXTS * 12  # 36 messages, 3 batches

    # Execute
    norms = []
    for mu in (0.0, 50.0):
        config = LocalTrainingConfig(prox_mu=mu, client_lr=0.5)
        report = train_in_round_one(
            scratch, global_parameters, tokenizer, config, texts
        )
        norms.append(sum(float(u.norm()) ** 2 for u in report.update) ** 0.5)

    # Assert
    assert norms[1] < norms[0]


def test_phone_evaluate_counts_future_text_only(
    tokenizer: WordTokenizer, tiny_model_config: ModelConfig
) -> None:
    # Prepare
    model = NextWordModel(tiny_model_config)
    phone = make_phone(TEXTS, future=("see you tomorrow", "ok", "bye now"))

    # Execute
    counts = phone.evaluate_counts(
        model, tokenizer=tokenizer, max_messages=2, keystroke_texts=1
    )
    metrics = phone.evaluate(
        model, tokenizer=tokenizer, max_messages=2, keystroke_texts=1
    )
    nothing = make_phone(TEXTS).evaluate_counts(
        model, tokenizer=tokenizer, max_messages=2, keystroke_texts=1
    )

    # Assert: "see you tomorrow" and "ok": 4 word targets, 4 + 2 loss targets
    # (each message's <eos>); keystrokes of "see you tomorrow" = 16.
    assert counts is not None and nothing is None
    assert counts.num_messages == 2
    assert counts.word_targets == 4 and counts.loss_targets == 6
    assert counts.keys_without == 16
    assert metrics is not None and metrics.num_targets == 4
    assert metrics.top3 == counts.top3_hits / 4


def test_packed_sequences_round_trip_and_select() -> None:
    # Prepare
    sequences = [[1, 2, 3], [4], [5, 6]]

    # Execute
    packed = PackedSequences.pack(sequences)

    # Assert: one int32 array 1..6 cut at 0, 3, 4, 6
    assert packed.tokens.tolist() == [1, 2, 3, 4, 5, 6]
    assert packed.tokens.dtype.name == "int32"
    assert packed.offsets.tolist() == [0, 3, 4, 6]
    assert len(packed) == 3
    assert packed.unpack() == sequences
    assert packed.unpack([2, 0]) == [[5, 6], [1, 2, 3]]
    assert PackedSequences.pack([]).unpack() == []


def test_phone_local_data_is_its_encoded_history() -> None:
    # Prepare
    phone = make_phone(TEXTS)
    tokenizer = WordTokenizer.public()
    config = LocalTrainingConfig(batch_size=1, max_local_steps=None)

    # Execute
    first = phone.local_data(
        tokenizer=tokenizer, config=config, max_len=16, server_round=1
    )
    again = phone.local_data(
        tokenizer=tokenizer, config=config, max_len=16, server_round=2
    )

    # Assert: no budget, so every window of the history, packed once and unpacked
    assert first.sequences == encode_messages(tokenizer, list(TEXTS), 16)
    assert again.sequences == first.sequences


def test_phone_save_then_load_round_trips(tmp_path: Path) -> None:
    # Prepare
    phone = make_phone(TEXTS, future=("later",))
    path = tmp_path / "phones" / "phone_000.json"

    # Execute
    phone.save(path)
    loaded = Phone.load(path, profile=phone.profile, seed=0)
    grown = loaded.with_texts(["one more"])
    grown.save(path)
    again = Phone.load(path, profile=phone.profile, seed=0)

    # Assert: only the phone's own methods read it back.
    assert loaded.client_id == "p"
    assert again.future_size(10) == 1
    assert (
        again.local_steps(WordTokenizer.public(), LocalTrainingConfig(batch_size=1), 16)
        == 4
    )


def test_phone_load_bad_file_raises_clear_error(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "broken.json"
    path.write_text("{not json")

    # Execute / Assert
    with pytest.raises(PhoneStoreError, match="broken.json: not a phone's history"):
        Phone.load(path, profile=make_phone(TEXTS).profile, seed=0)


def test_local_training_config_rejects_bad_settings() -> None:
    # Prepare / Execute / Assert
    with pytest.raises(FleetConfigError, match="local_epochs"):
        LocalTrainingConfig(local_epochs=0)
    with pytest.raises(FleetConfigError, match="client_lr"):
        LocalTrainingConfig(client_lr=0.0)
    with pytest.raises(FleetConfigError, match="fault_kind"):
        FleetConfig(fault_kind="melted")


def test_work_seconds_adds_compute_and_transfer() -> None:
    # Prepare: 2 steps of 0.5 s on a phone twice as slow, 1 MB each way at 1 MB/s.
    profile = replace(
        draw_profile(0, "p", FleetConfig()), speed_factor=2.0, bandwidth_bytes=1e6
    )

    # Execute
    seconds = work_seconds(profile, steps=2, model_bytes=1_000_000, step_seconds=0.5)

    # Assert
    assert seconds == 2 * 0.5 * 2.0 + 2.0


def test_load_parameters_copies_in_order(tiny_model_config: ModelConfig) -> None:
    # Prepare
    source = NextWordModel(tiny_model_config)
    target = NextWordModel(tiny_model_config)

    # Execute
    load_parameters(target, parameters_of(source))

    # Assert
    for a, b in zip(source.parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b)
