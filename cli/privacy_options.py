"""`fedtype simulate`'s privacy options: secure aggregation, DP, canaries."""

from __future__ import annotations

import argparse

from cli.errors import UsageError
from coordinator.privacy.dp import (
    CLIP_NORM_RANGE,
    NOISE_MULTIPLIER_RANGE,
    NOISE_PLACEMENTS,
    DPConfig,
    DPConfigError,
)
from coordinator.privacy.privacy_config import (
    MAX_SIMULATED_POPULATION,
    TARGET_EPSILON_RANGE,
    PrivacyConfig,
    PrivacyConfigError,
)
from corpora.canaries import MAX_COUNT

# The sensible range of each numeric DP option (the configs' own, shown in --help
# and named in the one-line error).
RANGES: dict[str, tuple[float, float]] = {
    "dp_clip": CLIP_NORM_RANGE,
    "noise_multiplier": NOISE_MULTIPLIER_RANGE,
    "target_epsilon": TARGET_EPSILON_RANGE,
    "simulated_population": (1, MAX_SIMULATED_POPULATION),
}


def _range(name: str) -> str:
    low, high = RANGES[name]
    return f"[{low:g}, {high:g}]" if high < 1e6 else f"[{low:g}, {high:,}]"


def add_privacy_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The group of privacy options (new runs only; a resume keeps its own)."""
    privacy, dp = PrivacyConfig(), DPConfig()
    group = parser.add_argument_group("privacy (new runs only)")
    group.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="SecAgg+: the server learns only the round's sum (no norm screening)",
    )
    group.add_argument(
        "--dp-clip",
        type=float,
        default=None,
        help=f"DP-FedAvg: clip each update to this L2 norm (e.g. {dp.clip_norm}; "
        f"range {_range('dp_clip')})",
    )
    group.add_argument(
        "--adaptive-clip",
        type=float,
        default=None,
        metavar="QUANTILE",
        help="move the DP clip bound to this quantile of the norms (e.g. 0.5)",
    )
    noise = group.add_mutually_exclusive_group()
    noise.add_argument(
        "--noise-multiplier",
        type=float,
        default=None,
        help=f"DP noise z on the sum, stddev z*C (default with --dp-clip: "
        f"{dp.noise_multiplier}; range {_range('noise_multiplier')})",
    )
    noise.add_argument(
        "--target-epsilon",
        type=float,
        default=None,
        help="choose z so that --rounds rounds spend at most this epsilon (again "
        "before each round, within the budget left), and stop before a round would "
        f"exceed it (range {_range('target_epsilon')})",
    )
    group.add_argument(
        "--dp-noise",
        choices=NOISE_PLACEMENTS,
        default=None,
        help="who adds the DP noise: the server after unmasking (central, the "
        "default) or each phone a share before masking (distributed, needs "
        "--secure-aggregation)",
    )
    group.add_argument(
        "--delta",
        type=float,
        default=None,
        help="delta of (epsilon, delta); default the largest power of ten at or "
        "below min(1e-5, 1/(10 x phones))",
    )
    group.add_argument(
        "--simulated-population",
        type=int,
        default=None,
        metavar="P",
        help="simulate a deployment of P users (with --noise-cohort-size): DP "
        "noise is that of its cohort, --target-epsilon its epsilon; labelled "
        "simulated everywhere, beside this fleet's own (far larger) epsilon "
        f"(range {_range('simulated_population')})",
    )
    group.add_argument(
        "--noise-cohort-size",
        type=int,
        default=None,
        metavar="M",
        help="the simulated deployment's cohort: noise on the mean is z*C/M "
        "while --clients-per-round phones train (pfl-research's noise_cohort_size)",
    )
    group.add_argument(
        "--replayable-noise",
        action="store_true",
        help="TESTS ONLY: draw DP noise from the run's seed instead of the OS, so "
        "that anyone with the seed can subtract it; the run is labelled "
        "'replayable noise: no privacy' everywhere",
    )
    group.add_argument(
        "--attack-phones",
        type=int,
        default=privacy.attack_phones,
        help="phones whose plain updates the curious server attacks each round "
        "(default: %(default)s; 0: off)",
    )
    group.add_argument(
        "--log-attack-words",
        action="store_true",
        help="also store the words the attack recovers in metrics.jsonl: this "
        "writes users' words into the run log (default: only its precision and "
        "recall; the words stay in memory for the live demo)",
    )
    group.add_argument(
        "--canaries",
        type=int,
        default=privacy.canaries,
        help="Secret Sharer canaries planted at creation (default: %(default)s)",
    )
    return group


def default_noise_note(args: argparse.Namespace) -> str | None:
    """What the run adds when --dp-clip comes with no noise setting, else None."""
    if args.dp_clip is None or args.noise_multiplier is not None:
        return None
    if args.target_epsilon is not None:
        return None
    z = DPConfig().noise_multiplier
    return (
        f"--dp-clip {args.dp_clip:g} without --noise-multiplier or --target-epsilon: "
        f"the default noise z = {z:g} is added (stddev {z:g} x {args.dp_clip:g} on "
        "the sum)"
    )


def privacy_config(
    args: argparse.Namespace, *, clients_per_round: int
) -> PrivacyConfig:
    """The `PrivacyConfig` the options describe; bad combinations are usage errors."""
    dp_flags = [
        name
        for name in (
            "adaptive_clip",
            "noise_multiplier",
            "target_epsilon",
            "delta",
            "dp_noise",
            "simulated_population",
            "noise_cohort_size",
        )
        if getattr(args, name) is not None
    ]
    if not 0 <= args.canaries <= MAX_COUNT:
        raise UsageError(f"--canaries: must lie in [0, {MAX_COUNT}]: {args.canaries}")
    if args.replayable_noise:
        dp_flags.append("replayable_noise")
    if args.dp_clip is None and dp_flags:
        flags = ", ".join("--" + n.replace("_", "-") for n in dp_flags)
        raise UsageError(f"{flags}: differential privacy needs --dp-clip C")
    check_ranges(args)
    try:
        dp = None
        if args.dp_clip is not None:
            dp = DPConfig(
                clip_norm=args.dp_clip,
                noise_multiplier=(
                    DPConfig().noise_multiplier
                    if args.noise_multiplier is None
                    else args.noise_multiplier
                ),
                expected_clients=clients_per_round,
                adaptive_clip_quantile=args.adaptive_clip,
                placement=args.dp_noise or "central",
            )
        return PrivacyConfig(
            secure_aggregation=args.secure_aggregation,
            dp=dp,
            target_epsilon=args.target_epsilon,
            calibrate_noise=args.target_epsilon is not None,
            delta=args.delta,
            attack_phones=args.attack_phones,
            log_attack_words=args.log_attack_words,
            canaries=args.canaries,
            simulated_population=args.simulated_population,
            noise_cohort_size=args.noise_cohort_size,
            replayable_noise=args.replayable_noise,
        )
    except (DPConfigError, PrivacyConfigError) as error:
        raise UsageError(str(error)) from None


def check_ranges(args: argparse.Namespace) -> None:
    """Refuse a DP option outside its sensible range (NaN and inf included)."""
    for name, (low, high) in RANGES.items():
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} {value:g}: must lie in {_range(name)} (see "
                "`fedtype simulate --help`)"
            )
