"""`fedtype simulate`'s privacy options: secure aggregation, DP, canaries."""

from __future__ import annotations

import argparse
from dataclasses import fields

from cli.errors import UsageError
from cli.options import (
    add_field_options,
    from_args,
    option_dest,
    range_text,
    typed_flag,
)
from coordinator.privacy.dp import DPConfig
from coordinator.privacy.privacy_config import PrivacyConfig, PrivacyConfigError
from corpora.canaries import MAX_COUNT
from models.settings import BOUNDS, HELP, within

# The option that turns DP on (`DPConfig.clip_norm`), by its dest.
DP_SWITCH = "dp_clip_norm"


def add_privacy_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The group of privacy options (new runs only; a resume keeps its own).

    Every option is a field of `PrivacyConfig` or its `DPConfig` (`cli.options`);
    a noise multiplier and a target epsilon exclude each other.
    """
    privacy, dp = PrivacyConfig(), DPConfig()
    group = parser.add_argument_group("privacy (new runs only)")
    add_field_options(group, privacy, names={"secure_aggregation"})
    # DP's options default to unset: --dp-clip turns DP on.
    add_field_options(
        group, dp, names={"clip_norm", "adaptive_clip_quantile"}, unset=True
    )
    noise = group.add_mutually_exclusive_group()
    add_field_options(noise, dp, names={"noise_multiplier"}, unset=True)
    add_field_options(noise, privacy, names={"target_epsilon"})
    add_field_options(group, dp, names={"placement"}, unset=True)
    rest = {f.name for f in fields(PrivacyConfig)} - {
        "secure_aggregation",
        "target_epsilon",
    }
    add_field_options(group, privacy, names=rest)
    return group


def default_noise_note(args: argparse.Namespace) -> str | None:
    """What the run adds when --dp-clip comes with no noise setting, else None."""
    clip = getattr(args, DP_SWITCH)
    if clip is None or args.noise_multiplier is not None:
        return None
    if args.target_epsilon is not None:
        return None
    z = DPConfig().noise_multiplier
    return (
        f"{typed_flag(args, DP_SWITCH)} {clip:g} without --noise-multiplier or "
        f"--target-epsilon: the default noise z = {z:g} is added (stddev {z:g} x "
        f"{clip:g} on the sum)"
    )


def _dp_options_given(args: argparse.Namespace) -> list[str]:
    """The DP options given on the command line, as typed, --dp-clip aside."""
    dests = [option_dest(f) for f in fields(DPConfig) if f.metadata.get(HELP)]
    dests += ["target_epsilon", "delta", "simulated_population", "noise_cohort_size"]
    given = [d for d in dests if d != DP_SWITCH and getattr(args, d) is not None]
    if args.replayable_noise:
        given.append("replayable_noise")
    return [typed_flag(args, dest) for dest in given]


def privacy_config(
    args: argparse.Namespace, *, clients_per_round: int
) -> PrivacyConfig:
    """The `PrivacyConfig` the options describe; bad combinations are usage errors."""
    if not 0 <= args.canaries <= MAX_COUNT:
        raise UsageError(f"--canaries: must lie in [0, {MAX_COUNT}]: {args.canaries}")
    dp_flags = _dp_options_given(args)
    if getattr(args, DP_SWITCH) is None and dp_flags:
        raise UsageError(
            f"{', '.join(dp_flags)}: differential privacy needs --dp-clip C"
        )
    check_ranges(args)
    try:
        dp = None
        if getattr(args, DP_SWITCH) is not None:
            dp = from_args(
                DPConfig, args, unset=True, expected_clients=clients_per_round
            )
        return from_args(
            PrivacyConfig,
            args,
            dp=dp,
            calibrate_noise=args.target_epsilon is not None,
        )
    except PrivacyConfigError as error:
        raise UsageError(str(error)) from None


def check_ranges(args: argparse.Namespace) -> None:
    """Refuse a privacy option outside its sensible range (NaN and inf included),
    naming the option as typed."""
    for config in (DPConfig, PrivacyConfig):
        for field in fields(config):
            bounds = field.metadata.get(BOUNDS)
            if field.metadata.get(HELP) is None or bounds is None:
                continue
            value = getattr(args, option_dest(field))
            if value is not None and not within(value, bounds):
                option = typed_flag(args, option_dest(field))
                raise UsageError(
                    f"{option} {value:g}: must lie in {range_text(bounds)} (see "
                    "`fedtype simulate --help`)"
                )
