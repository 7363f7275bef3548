"""A protection wraps the aggregation: secure aggregation and DP-FedAvg in a round.

`private_delta` replaces FedAvg's weighted sum when `FederationConfig.privacy`
protects anything. Its steps, each a pure function called where its data lives:

  on the phone (inside `TrainedRound.reduce_vectors`' `build`, on the rank that
  holds the update): clip the update to C (`device_sim.clipping.clip_update`);
  weight it, `num_examples × clipped` with its weighted losses and the count
  appended (SecAgg alone, `device_sim.masked_figures`: the server learns the
  round's counts and losses only from the sum) or weight 1 with the clip bit
  appended when clipping adapts (DP-FedAvg);
  quantise and mask it (SecAgg+, `device_sim.secagg`), so what leaves the rank
  is an int64 vector in [0, 2^b);

  on the server: one all-reduce sums the vectors (exact in int64), SecAgg
  unmasks the sum, and the server divides: by the summed count (the weighted
  mean) or by the expected cohort m after adding N(0, (zC)²) (DP's noisy mean,
  noise from the operating system's randomness, rank 0's entropy broadcast so
  that every rank adds the same noise, and kept nowhere).

With distributed noise (`DPConfig.placement == "distributed"`, SecAgg required)
each phone adds its share N(0, (zC)²/n) to its contribution before masking
(`device_sim.clipping.phone_noise`, from the OS's randomness on the phone's
rank), the server adds none, and the accountant is given the z that the
survivors' shares really carry (`DPConfig.accounting_noise_multiplier`): the
server never holds a noiseless sum, so it need not be trusted to add noise.
Only `PrivacyConfig.replayable_noise` (tests, benchmarks) draws both from
`(seed, server_round[, client_id], "dp-noise")` instead, and every DP metrics
line then says `noise_source: "replayable (no privacy)"`.

C is DP's clip bound (adapting to a quantile of the norms, Andrew et al. 2021,
when asked), or under SecAgg alone the bound honest local training already
respects (`ScreenConfig.max_norm`: steps × client_lr × local clip), so the clip
changes no honest update and bounds what a hostile one adds to the sum. The
statistics screen under SecAgg sees only what a phone reports of itself (its
count, a finite/structure flag): the norm it cannot see (`blind`).

Every DP round is recorded in the `PrivacyAccountant` as one Poisson-subsampled
Gaussian release of (q_t, z_eff), q_t = clients_per_round / the phones eligible
when round t starts; the selection then is Poisson among those phones
(`coordinator.selection.poisson_select`), as accounted. Eligibility (idle,
charging, Wi-Fi, time zone) depends on a phone's profile and the clock, never on
its text, so the pool is fixed before any data is touched; a phone outside the
pool contributes nothing that round. Real fleets cannot promise such a sampler,
which is why Gboard uses DP-FTRL without amplification (Xu et al. 2023, arXiv
2305.18465); the amplified epsilon holds for the simulation, whose sampler we
control (docs/privacy.md, "Sampling and accounting").
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from coordinator.accountant import PrivacyAccountant, simulated_privacy
from coordinator.config import FederationConfig
from coordinator.dp import (
    DPConfig,
    adapt_clip_norm,
    noise_rng,
    noisy_clip_fraction,
    noisy_mean,
    os_noise_rng,
    os_noise_seed,
)
from coordinator.robust import ScreenConfig, UpdateStats
from coordinator.secagg_round import SecAggRound, start_secagg
from coordinator.secagg_server import SecAggSession
from coordinator.sum_checks import check_round_sum
from device_sim.clipping import (
    clip_bit,
    clip_update,
    flatten,
    phone_noise,
    unflatten,
)
from device_sim.executor import ClientSummary, TrainedRound
from device_sim.faults import hostile_contribution
from device_sim.masked_figures import loss_scale, mean_losses, weighted_losses
from device_sim.phone import ClientReport, Parameters
from device_sim.ranks import Ranks
from models.seeding import numpy_rng

# Bytes of a phone's SecAgg+ messages besides its masked vector: two public
# keys, and per neighbour a sealed pair of shares and one share in the unmask
# answer (docs/secagg.md, "Bytes up per phone").
_KEY_BYTES = 64
_NEIGHBOUR_BYTES = 172
# Values SecAgg alone appends to a phone's weighted update: three weighted
# losses and the count.
_FIGURES = 4


@dataclass(frozen=True)
class PrivacyState:
    """What the protections carry from round to round (saved in state.json)."""

    accountant: dict[str, Any] = field(default_factory=dict)  # to_dict(); {}: none
    clip_norm: float | None = None  # DP's current clip bound (adaptive moves it)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"accountant": self.accountant, "clip_norm": self.clip_norm}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PrivacyState:
        """The state `to_dict` wrote (None: a run without DP so far)."""
        data = data or {}
        clip = data.get("clip_norm")
        return cls(
            dict(data.get("accountant") or {}), None if clip is None else float(clip)
        )

    def load_accountant(self) -> PrivacyAccountant:
        """The accountant of the rounds recorded so far."""
        if not self.accountant:
            return PrivacyAccountant()
        return PrivacyAccountant.from_dict(self.accountant)


@dataclass(frozen=True)
class PrivateResult:
    """A protected round's pseudo-gradient and what it says about privacy."""

    delta: Parameters  # what server_step applies
    state: PrivacyState
    metrics: dict[str, Any]  # merged into the round's metrics line
    exact_sum: Parameters  # the sum the server sees after unmasking (before noise)
    noisy_mean: Parameters | None  # DP's released mean; None without DP
    # The phones whose contributions are in the sum (SecAgg's survivors); None:
    # every accepted phone.
    included: frozenset[str] | None = None


def blind(summaries: Sequence[ClientSummary]) -> list[UpdateStats]:
    """What the screen may see of each phone under SecAgg: no norm (0 passes)."""
    return [
        UpdateStats(s.client_id, s.num_examples, 0.0, s.finite, s.problem)
        for s in summaries
    ]


def sampling_probability(config: FederationConfig, pool: int) -> float:
    """q: each phone's chance of being sampled in a DP round from `pool` phones
    (the ones eligible when the round starts)."""
    return min(1.0, config.clients_per_round / max(1, pool))


def local_bound(config: FederationConfig) -> tuple[float, int]:
    """(the norm, the count) no honest phone's update exceeds: SecAgg's clip."""
    screen = ScreenConfig.for_training(config.local)
    max_examples = screen.max_examples()
    norm = None if max_examples is None else screen.max_norm(max_examples)
    if norm is None or max_examples is None:
        raise ValueError("no bound on the phones' updates (see FederationConfig)")
    return norm, max_examples


def current_clip(config: FederationConfig, state: PrivacyState) -> float:
    """The clip bound C of this round."""
    dp = config.privacy.dp
    if dp is None:
        return local_bound(config)[0]
    return state.clip_norm if state.clip_norm is not None else dp.clip_norm


def private_delta(
    trained: TrainedRound,
    accepted: Collection[str],
    config: FederationConfig,
    state: PrivacyState,
    *,
    server_round: int,
    pool: int,
) -> PrivateResult:
    """The round's delta under the run's protections; `pool` is the phones DP
    sampled from (the eligible ones).

    Raises:
        SecAggAbort: the sum could not be unmasked; nothing is released.
    """
    privacy, dp = config.privacy, config.privacy.dp
    clip = current_clip(config, state)
    weighted = dp is None
    bit = dp is not None and dp.adaptive
    max_examples = local_bound(config)[1] if weighted else 1
    metrics: dict[str, Any] = {"secure_aggregation": privacy.secure_aggregation}
    metrics["clip_norm"] = clip
    started = time.perf_counter()
    secagg: SecAggRound | None = None
    shares = dp is not None and dp.placement == "distributed"
    included = sorted(accepted)
    if privacy.secure_aggregation:
        # Six standard deviations of a phone's noise share fit in the range.
        spread = 6 * _share_stddev(dp, clip) if shares else 0.0
        secagg = start_secagg(
            included,
            config=config,
            server_round=server_round,
            max_abs=max_examples * max(clip, 1.0) + spread,
        )
        included = secagg.survivors
    session = None if secagg is None else secagg.session
    mask_seconds = [0.0]

    def build(report: ClientReport) -> np.ndarray:
        # A hostile phone masks what it likes (device_sim.faults); the server
        # can only check the sum (coordinator.sum_checks).
        x = contribution(report, clip_norm=clip, weighted=weighted, clip_bit_=bit)
        fault = trained.faults.get(report.client_id)
        hostile = session is not None and fault is not None
        if hostile:
            assert session is not None and fault is not None
            update = hostile_contribution(
                report.update,
                report.num_examples,
                fault=fault,
                clip_norm=clip,
                weighted=weighted,
                max_abs=session.parameters.spec.max_abs,
            )
            x[: update.shape[0]] = update  # its figures after it as reported
        if shares:
            assert dp is not None
            x = x + noise_share(
                dp,
                size=x.shape[0],
                clip_norm=clip,
                rng=_phone_noise_rng(config, server_round, report.client_id),
            )
        if session is None:
            return x
        begun = time.perf_counter()
        vector = session.maskers[report.client_id].mask(x, clip=not hostile).vector
        mask_seconds[0] += time.perf_counter() - begun
        return vector

    dtype = torch.int64 if session is not None else torch.float64
    # The length when nobody is included: a DP round still releases its noise.
    appended = _FIGURES if weighted else int(bit)
    size = sum(t.numel() for t in trained.reference) + appended
    total = trained.reduce_vectors(included, build, dtype=dtype, size=size)
    if secagg is not None:
        summed = secagg.unmask(total)
        check_round_sum(
            summed,
            [s.num_examples for s in trained.summaries if s.client_id in included],
            config=config,
            spec=secagg.session.parameters.spec,
            clip_norm=clip,
            size=size - appended,
            noise_stddev=_share_stddev(dp, clip) if shares else 0.0,
        )
        metrics["secagg"] = {
            **_secagg_metrics(secagg.session, started, mask_seconds[0], size=size),
            **secagg.counts(),
        }
    else:
        summed = total
    like = [t.to(torch.float64) for t in trained.reference]
    if weighted:
        result = _weighted_release(summed, like, state, metrics, clip)
    else:
        result = _dp_release(
            summed,
            like,
            config,
            state,
            clip,
            pool,
            metrics,
            rng=server_noise_rng(config, server_round, trained.ranks),
            shares_survived=len(included) if shares else None,
        )
    return replace(result, included=frozenset(included))


def _weighted_release(
    summed: np.ndarray,
    like: list[torch.Tensor],
    state: PrivacyState,
    metrics: dict[str, Any],
    clip: float,
) -> PrivateResult:
    """SecAgg alone: the weighted mean, and the round's count and mean losses
    from the sum's appended totals (the line's `masked_sum`)."""
    update, losses, count = summed[:-_FIGURES], summed[-_FIGURES:-1], summed[-1]
    exact = unflatten(update.copy(), like)
    metrics["masked_sum"] = {
        "num_examples": int(round(count)),
        **mean_losses(losses, count, scale=loss_scale(clip)),
    }
    mean = unflatten(update / count, like)
    return PrivateResult(mean, state, metrics, exact, None)


def server_noise_rng(
    config: FederationConfig, server_round: int, ranks: Ranks
) -> np.random.Generator:
    """The server's DP noise stream of a round: the OS's randomness, rank 0's
    entropy given to every rank so that all ranks add the same noise (called on
    every rank); the replayable stream only with `replayable_noise`."""
    if config.privacy.replayable_noise:
        return noise_rng(config.seed, server_round)
    entropy = ranks.broadcast_object(os_noise_seed())
    assert isinstance(entropy, int)
    return os_noise_rng(entropy)


def _phone_noise_rng(
    config: FederationConfig, server_round: int, client_id: str
) -> np.random.Generator:
    """A phone's noise-share stream: its own OS randomness, unless replayable."""
    if config.privacy.replayable_noise:
        return numpy_rng(config.seed, server_round, client_id, "dp-noise")
    return os_noise_rng()


def _share_stddev(dp: DPConfig | None, clip_norm: float) -> float:
    """The largest stddev of one phone's noise share (update or clip bit)."""
    assert dp is not None
    n = math.sqrt(dp.resolved_noise_shares)
    return max(dp.noise_multiplier * clip_norm, dp.resolved_count_stddev) / n


def noise_share(
    dp: DPConfig, *, size: int, clip_norm: float, rng: np.random.Generator
) -> np.ndarray:
    """A phone's distributed noise for its (size,) contribution.

    N(0, (zC)²/n) on the update's coordinates and, when the clip adapts, N(0,
    σ_b²/n) on the appended clip bit: n shares sum to the central mechanism's.
    """
    n = dp.resolved_noise_shares
    if not dp.adaptive:
        return phone_noise(
            size,
            clip_norm=clip_norm,
            noise_multiplier=dp.noise_multiplier,
            noise_shares=n,
            rng=rng,
        )
    noise = phone_noise(
        size - 1,
        clip_norm=clip_norm,
        noise_multiplier=dp.noise_multiplier,
        noise_shares=n,
        rng=rng,
    )
    bit = rng.normal(0.0, dp.resolved_count_stddev / math.sqrt(n))
    return np.append(noise, bit)


def contribution(
    report: ClientReport, *, clip_norm: float, weighted: bool, clip_bit_: bool
) -> np.ndarray:
    """The phone's float64 vector before masking: clipped, weighted, appended.

    (D,) clipped update times `num_examples`, then its three weighted losses
    and the count, when `weighted`; weight 1 with the centred bit [norm <= C] − ½
    appended when `clip_bit_` (`device_sim.clipping.clip_bit`).
    """
    clipped, norm = clip_update(report.update, clip_norm)
    x = flatten(clipped)
    if weighted:
        n = report.num_examples
        losses = weighted_losses(report.metrics, n, scale=loss_scale(clip_norm))
        return np.concatenate([x * n, losses, [float(n)]])
    if clip_bit_:
        return np.append(x, clip_bit(norm, clip_norm))
    return x


def _dp_release(
    summed: np.ndarray,
    like: list[torch.Tensor],
    config: FederationConfig,
    state: PrivacyState,
    clip: float,
    pool: int,
    metrics: dict[str, Any],
    *,
    rng: np.random.Generator,
    shares_survived: int | None = None,
) -> PrivateResult:
    """DP-FedAvg's noisy mean, the clip step and the accountant's record.

    `shares_survived` is set under distributed noise: the sum already carries
    the phones' noise, the server adds none, and the accountant gets the z of
    the shares that arrived.
    """
    dp = config.privacy.dp
    assert dp is not None
    distributed = shares_survived is not None
    # A simulated deployment's noise is its large cohort's, scaled to this one.
    scale = config.privacy.noise_scale
    vector = summed[:-1] if dp.adaptive else summed
    released = noisy_mean(
        vector,
        expected_clients=dp.expected_clients,
        clip_norm=clip,
        noise_multiplier=0.0 if distributed else dp.noise_multiplier * scale,
        rng=rng,
    )
    next_clip = clip
    if dp.adaptive:
        assert dp.adaptive_clip_quantile is not None
        fraction = noisy_clip_fraction(
            summed[-1],
            expected_clients=dp.expected_clients,
            count_stddev=0.0 if distributed else dp.resolved_count_stddev * scale,
            rng=rng,
        )
        next_clip = adapt_clip_norm(
            clip,
            clip_fraction=fraction,
            target_quantile=dp.adaptive_clip_quantile,
            clip_lr=dp.clip_lr,
        )
    accountant = state.load_accountant()
    q = sampling_probability(config, pool)
    z = dp.accounting_noise_multiplier(shares_survived=shares_survived) * scale
    accountant.record_round(q, z)
    metrics.update(
        **_spent(accountant, config),
        noise_placement=dp.placement,
        noise_multiplier=z,
        sampling_probability=q,
        next_clip_norm=next_clip,
    )
    mean = unflatten(released, like)
    new_state = PrivacyState(accountant.to_dict(), next_clip)
    # What the server holds after unmasking: noiseless only with central noise.
    exact = unflatten(vector.copy(), like)
    return PrivateResult(mean, new_state, metrics, exact, mean)


def _spent(accountant: PrivacyAccountant, config: FederationConfig) -> dict[str, Any]:
    """epsilon spent so far, its delta, and the run's budget when it has one;
    with a simulated deployment its figures apart, under `simulated_privacy`."""
    privacy = config.privacy
    assert privacy.delta is not None
    figures: dict[str, Any] = {
        "epsilon": accountant.epsilon(privacy.delta),
        "delta": privacy.delta,
        "noise_source": privacy.noise_source,
    }
    if privacy.simulated:
        assert privacy.simulated_population and privacy.noise_cohort_size
        deployment: dict[str, Any] = asdict(
            simulated_privacy(
                population=privacy.simulated_population,
                cohort_size=privacy.noise_cohort_size,
                noise_multiplier=_simulated_noise(config),
                rounds=accountant.rounds,
                delta=privacy.simulated_delta,
            )
        )
        if privacy.target_epsilon is not None:
            deployment["target_epsilon"] = privacy.target_epsilon
        figures["simulated_privacy"] = deployment
    elif privacy.target_epsilon is not None:
        figures["target_epsilon"] = privacy.target_epsilon
    return figures


def _simulated_noise(config: FederationConfig) -> float:
    """The z the simulated deployment's cohort gets (the configured one)."""
    dp = config.privacy.dp
    assert dp is not None
    return dp.accounting_noise_multiplier()


def _simulated_accountant(config: FederationConfig, rounds: int) -> PrivacyAccountant:
    """The simulated deployment's accountant after `rounds` rounds of (q, z)."""
    accountant = PrivacyAccountant()
    q = config.privacy.simulated_sampling_probability
    z = _simulated_noise(config)
    for _ in range(rounds):
        accountant.record_round(q, z)
    return accountant


def charge_unreleased(
    state: PrivacyState, config: FederationConfig, pool: int
) -> tuple[PrivacyState, dict[str, Any]]:
    """A DP round that sampled phones and then released nothing, charged anyway.

    Whether a round is abandoned (SecAgg short of its threshold, a non-finite
    aggregate; too few valid reports never abandon a DP round, see
    `coordinator.rounds`) depends on who was sampled, so the accountant records
    it as a full round of (q, z): epsilon only ever grows, and an abandoned
    round never makes a run look more private than it was.
    """
    dp = config.privacy.dp
    assert dp is not None
    accountant = state.load_accountant()
    q = sampling_probability(config, pool)
    z = (
        dp.accounting_noise_multiplier(shares_survived=None)
        * config.privacy.noise_scale
    )
    accountant.record_round(q, z)
    figures = {
        **_spent(accountant, config),
        "noise_multiplier": z,
        "sampling_probability": q,
        "charged_unreleased": True,
    }
    return PrivacyState(accountant.to_dict(), state.clip_norm), figures


def _secagg_metrics(
    session: SecAggSession, started: float, mask_seconds: float, *, size: int
) -> dict[str, Any]:
    degree = session.parameters.degree
    per_phone = math.ceil(session.bits / 8) * size + _KEY_BYTES
    return {
        "seconds": time.perf_counter() - started,
        "mask_seconds": mask_seconds,  # this rank's phones only
        "bytes_up_per_phone": per_phone + _NEIGHBOUR_BYTES * degree,
        "degree": degree,
        "threshold": session.parameters.threshold,
    }


def epsilon_budget_left(
    config: FederationConfig, state: PrivacyState, *, pool: int
) -> int | None:
    """Rounds of (q, z) that still fit the target epsilon (None: no target).

    Under distributed noise a round's z depends on how many shares arrive; the
    check assumes the fewest a round may apply with (`min_reports`), so the
    target holds whoever drops out. With a simulated deployment the target is
    the deployment's epsilon, and so is the check.
    """
    privacy, dp = config.privacy, config.privacy.dp
    if dp is None or privacy.target_epsilon is None or privacy.delta is None:
        return None
    if privacy.simulated:
        done = state.load_accountant().rounds
        return _simulated_accountant(config, done).rounds_within(
            privacy.target_epsilon,
            privacy.simulated_delta,
            sampling_probability=privacy.simulated_sampling_probability,
            noise_multiplier=_simulated_noise(config),
        )
    fewest = config.min_reports if dp.placement == "distributed" else None
    return state.load_accountant().rounds_within(
        privacy.target_epsilon,
        privacy.delta,
        sampling_probability=sampling_probability(config, pool),
        noise_multiplier=dp.accounting_noise_multiplier(shares_survived=fewest),
    )
