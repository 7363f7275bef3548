"""`fedtype simulate`'s privacy options: secure aggregation, DP, canaries."""

from __future__ import annotations

import argparse

from cli.errors import UsageError
from coordinator.dp import NOISE_PLACEMENTS, DPConfig, DPConfigError
from coordinator.privacy_config import PrivacyConfig, PrivacyConfigError
from corpora.canaries import MAX_COUNT


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
        help=f"DP-FedAvg: clip each update to this L2 norm (e.g. {dp.clip_norm})",
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
        f"{dp.noise_multiplier})",
    )
    noise.add_argument(
        "--target-epsilon",
        type=float,
        default=None,
        help="choose z so that --rounds rounds spend at most this epsilon, and stop "
        "before a round would exceed it",
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
        "simulated everywhere, beside this fleet's own (far larger) epsilon",
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
        "--attack-phones",
        type=int,
        default=privacy.attack_phones,
        help="phones whose plain updates the curious server attacks each round "
        "(default: %(default)s; 0: off)",
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
    if args.dp_clip is None and dp_flags:
        flags = ", ".join("--" + n.replace("_", "-") for n in dp_flags)
        raise UsageError(f"{flags}: differential privacy needs --dp-clip C")
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
            canaries=args.canaries,
            simulated_population=args.simulated_population,
            noise_cohort_size=args.noise_cohort_size,
        )
    except (DPConfigError, PrivacyConfigError) as error:
        raise UsageError(str(error)) from None
