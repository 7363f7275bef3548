"""A SecAgg+ round end to end: sums, dropouts at each stage, aborts, replay."""

from __future__ import annotations

import time

import numpy as np
import pytest

import coordinator.protections.secagg_server as server_module
from coordinator.protections.secagg_server import SecAggSession, modular_sum
from device_sim.secagg_phones import SecAggPhones
from secagg import (
    EncryptedShare,
    MaskedInput,
    SecAggAbort,
    SecAggConfig,
    UnmaskRequest,
)
from secagg.quantize import quantize

IDS = [f"phone-{i}" for i in range(10)]
SIZE = 1_000
# With max_abs 1 and 10 phones at 32 bits the scale is 2^27 (see choose_spec).
GRID = 2.0**27


def grid_inputs(ids: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs on the quantisation grid, so that sums come back exactly."""
    rng = np.random.default_rng(seed)
    return {u: rng.integers(-(2**27), 2**27, SIZE, endpoint=True) / GRID for u in ids}


def setup(ids: list[str] = IDS, *, shared: list[str] | None = None) -> SecAggSession:
    """The default config's round 3 of seed 7 with |x_i| <= 1."""
    return session_of(ids, seed=7, server_round=3, shared=shared)


def session_of(
    ids: list[str],
    *,
    seed: int = 0,
    server_round: int = 0,
    max_abs: float = 1.0,
    bits: int | None = None,
    shared: list[str] | None = None,
) -> SecAggSession:
    """A session of the simulated phones `ids` (keys and shares done)."""
    config = SecAggConfig() if bits is None else SecAggConfig(bits=bits)
    return SecAggSession.setup(
        ids,
        phones=SecAggPhones.for_round,
        config=config,
        seed=seed,
        server_round=server_round,
        max_abs=max_abs,
        shared=shared,
    )


def masked_total(
    session: SecAggSession, xs: dict[str, np.ndarray], uploaders: list[str]
) -> np.ndarray:
    masked = [session.maskers[u].mask(xs[u]) for u in uploaders]
    return modular_sum((m.vector for m in masked), session.bits)


def test_session_hand_computed_three_phones() -> None:
    # Prepare: bits 16, max_abs 4, n 3 -> scale 2048 (k = 2, t = 2)
    xs = {
        "a": np.array([0.5, -0.25, 1.0]),
        "b": np.array([1.5, 0.75, 2.0]),
        "c": np.array([-3.0, 0.0001, 3.0]),
    }
    session = session_of(list(xs), server_round=1, max_abs=4.0, bits=16)

    # Execute: q = [1024, -512, 2048] + [3072, 1536, 4096] + [-6144, 0, 6144]
    total = masked_total(session, xs, ["a", "b", "c"])
    result = session.unmask(total, survivors=["a", "b", "c"])

    # Assert: [-2048, 1024, 12288] / 2048; the last coordinate sums the counts
    assert session.parameters.spec.scale == 2048.0
    assert result.tolist() == [-1.0, 0.5, 6.0]


def test_session_sum_within_quantisation_bound() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    xs = {u: rng.uniform(-1, 1, SIZE) for u in IDS}
    session = setup()

    # Execute
    result = session.unmask(masked_total(session, xs, IDS), survivors=IDS)

    # Assert
    error = np.abs(result - sum(xs.values())).max()
    assert error <= session.parameters.spec.error_bound(len(IDS))


def test_masked_input_is_uniform_and_hides_the_update() -> None:
    # Prepare: a constant update, whose quantised form is one value
    x = np.full(16_000, 0.5)
    session = setup()

    # Execute
    masked = session.maskers["phone-0"].mask(x)

    # Assert: an int64 vector in [0, 2^32) unlike q, top 4 bits uniform
    q = quantize(x, session.parameters.spec).astype(np.int64)
    v = masked.vector
    assert isinstance(masked, MaskedInput) and v.dtype == np.int64
    assert v.min() >= 0 and v.max() < 2**32
    assert np.mean(v == q) < 1e-3
    counts = np.bincount(v >> 28, minlength=16)
    assert float(((counts - 1000.0) ** 2 / 1000.0).sum()) < 37.7  # chi2(15) 99.9 %
    # Mean within 5 standard errors of 2^31 (sd of a uniform lane 2^32 / sqrt 12)
    assert abs(v.mean() - 2**31) < 5 * 2**32 / np.sqrt(12 * v.size)


def test_dropout_before_key_exchange_is_excluded() -> None:
    # Prepare: phone-9 never advertised keys
    cohort = IDS[:9]
    xs = grid_inputs(cohort)
    session = setup(cohort)

    # Execute
    result = session.unmask(masked_total(session, xs, cohort), survivors=cohort)

    # Assert: the scale is still 2^27 at n = 9, so the sum is exact
    assert "phone-9" not in session.maskers
    assert np.array_equal(result, sum(xs.values()))


def test_dropout_after_sharing_is_recovered_exactly() -> None:
    # Prepare: two phones shared their secrets, masked, but never uploaded
    xs = grid_inputs(IDS)
    survivors = IDS[2:]
    session = setup()

    # Execute
    total = masked_total(session, xs, survivors)
    result = session.unmask(total, survivors=survivors)

    # Assert
    assert np.array_equal(result, sum(xs[u] for u in survivors))


def test_dropout_after_advertising_keys_is_recovered_exactly() -> None:
    # Prepare: phone-0 advertised keys and dropped before sending shares
    xs = grid_inputs(IDS)
    sharing = IDS[1:]
    session = setup(shared=sharing)

    # Execute
    result = session.unmask(masked_total(session, xs, sharing), survivors=sharing)

    # Assert
    assert "phone-0" not in session.maskers
    assert np.array_equal(result, sum(xs[u] for u in sharing))


def test_dropout_before_unmask_responses_is_fine_above_threshold() -> None:
    # Prepare: k = 8, t = 5; one phone dropped after sharing, two after upload
    xs = grid_inputs(IDS)
    survivors = IDS[1:]
    session = setup()

    # Execute
    total = masked_total(session, xs, survivors)
    result = session.unmask(total, survivors=survivors, responders=IDS[3:])

    # Assert: their inputs are in the sum, their shares were not needed
    assert (session.parameters.degree, session.parameters.threshold) == (8, 5)
    assert np.array_equal(result, sum(xs[u] for u in survivors))


def test_too_few_responders_abort_before_any_reconstruction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: 4 responders, so no secret can have t = 5 shares
    calls: list[object] = []
    monkeypatch.setattr(server_module, "reconstruct_secret", calls.append)
    xs = grid_inputs(IDS)
    session = setup()
    total = masked_total(session, xs, IDS)

    # Execute
    with pytest.raises(SecAggAbort, match="of the 5 shares needed") as caught:
        session.unmask(total, survivors=IDS, responders=IDS[:4])

    # Assert: nothing was reconstructed, so nothing unmasked
    assert calls == []
    assert "self-mask seed" in caught.value.reason


def test_dropout_leaving_fewer_than_t_neighbours_aborts() -> None:
    # Prepare: n = 3 so k = 2 and t = 2; c drops after sharing
    xs = grid_inputs(["a", "b", "c"])
    session = session_of(list(xs))
    total = masked_total(session, xs, ["a", "b"])

    # Execute / Assert: a's seed has one live holder (b) of the two needed
    with pytest.raises(SecAggAbort, match="1 of the 2 shares .* self-mask seed of a"):
        session.unmask(total, survivors=["a", "b"])


def test_too_few_survivors_abort() -> None:
    # Prepare
    session = setup()
    xs = grid_inputs(IDS)
    survivors = IDS[:4]

    # Execute / Assert: 4 uploads < t = 5
    with pytest.raises(SecAggAbort, match="only 4 phones uploaded"):
        session.unmask(masked_total(session, xs, survivors), survivors=survivors)


def test_phone_never_reveals_both_secrets_of_a_neighbour() -> None:
    # Prepare
    session = setup()
    phone = session.phones.clients["phone-5"]
    first = UnmaskRequest(frozenset(IDS[1:]))

    # Execute
    response = phone.respond(first)

    # Assert: one kind of share per owner, and no second answer
    assert set(response.self_mask_shares).isdisjoint(response.mask_key_shares)
    assert set(response.mask_key_shares) <= {"phone-0"}
    with pytest.raises(SecAggAbort, match="already answered"):
        phone.respond(UnmaskRequest(frozenset(IDS[2:])))


def test_session_is_deterministic_given_the_seed() -> None:
    # Prepare
    x = grid_inputs(["phone-3"])["phone-3"]

    # Execute
    first = setup().maskers["phone-3"].mask(x).vector
    second = setup().maskers["phone-3"].mask(x).vector
    other = session_of(IDS, seed=8, server_round=3)

    # Assert
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other.maskers["phone-3"].mask(x).vector)


def test_tampered_share_fails_to_open() -> None:
    # Prepare: a relayed share with one bit flipped
    session = setup()
    keys = {u: c.advertise() for u, c in session.phones.clients.items()}
    sender = session.phones.clients["phone-2"]
    neighbours = [keys[v] for v in session.server.graph["phone-2"]]
    honest = sender.share(neighbours)
    client = session.phones.clients["phone-1"]
    to_one = next(m for m in honest if m.recipient == "phone-1")
    flipped = bytes([to_one.ciphertext[0] ^ 1]) + to_one.ciphertext[1:]

    # Execute / Assert
    with pytest.raises(SecAggAbort, match="failed to open"):
        client.receive([EncryptedShare("phone-2", "phone-1", flipped)])


def test_modular_sum_wraps_exactly() -> None:
    # Prepare: three values near 2^8 at 8 bits
    vectors = [np.array([255, 1]), np.array([255, 2]), np.array([2, 253])]

    # Execute
    total = modular_sum(vectors, 8)

    # Assert: 512 mod 256 = 0, 256 mod 256 = 0
    assert total.tolist() == [0, 0]


def test_session_at_the_real_model_size() -> None:
    # Prepare: 1,360,660 parameters plus num_examples, four phones
    size = 1_360_661
    ids = ["a", "b", "c", "d"]
    rng = np.random.default_rng(2)
    xs = {u: rng.integers(-(2**28), 2**28, size) / 2.0**28 for u in ids}
    started = time.perf_counter()

    # Execute: d masks but never uploads
    session = session_of(ids)
    total = masked_total(session, xs, ["a", "b", "c"])
    result = session.unmask(total, survivors=["a", "b", "c"])
    seconds = time.perf_counter() - started

    # Assert: scale 2^28 at n = 4; k = 3, t = 2, so d's mask key came back
    assert session.parameters.spec.scale == 2.0**28
    assert np.array_equal(result, xs["a"] + xs["b"] + xs["c"])
    assert seconds < 2.0
