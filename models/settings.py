"""The fields of the frozen configs: their checks and the options they make.

Every config (`ModelConfig`, `LocalTrainingConfig`, `FederationConfig`, ...)
declares a field with `setting(default, ...)`: its bounds and choices, written
once in the field, are checked by `check_settings` in the config's
`__post_init__`, and its `help` (with `flag` and `aliases` where the option's name
is not the field's) makes its command-line option (`cli.options`). A field
without `help` has no option. The metadata is plain `dataclasses.field`
metadata, so a config module needs nothing but this one to declare it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

# The keys of a field's metadata (`setting`).
HELP, FLAG, ALIASES, METAVAR, CHOICES, BOUNDS, FINITE = (
    "help",
    "flag",
    "aliases",
    "metavar",
    "choices",
    "bounds",
    "finite",
)


class ConfigError(ValueError):
    """A setting that cannot work; the message names the field and why.

    Each layer has one subclass (`FleetConfigError`, `FederationConfigError`,
    `CentralConfigError`), so that a caller catches its layer's settings alone.
    """


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    help: str | None = None,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    finite: bool = False,
) -> Any:
    """A config field with its default, its checks and its option.

    Args:
        factory: builds the default instead of `default` (a nested config).
        help: the option's help; None makes no option.
        flag: the option's name without dashes where it is not the field's
            (`dp-clip-norm` for `DPConfig.clip_norm`).
        aliases: older names of the option, still accepted and listed in --help.
        metavar: the value's name in --help, where the help speaks of it.
        choices: the values accepted.
        at_least, above, at_most, below: bounds of a number (None values pass).
        finite: refuse NaN and infinities (bounds already refuse NaN).
    """
    bounds = (at_least, above, at_most, below)
    metadata = {
        HELP: help,
        FLAG: flag,
        ALIASES: tuple(aliases),
        METAVAR: metavar,
        CHOICES: None if choices is None else tuple(choices),
        BOUNDS: None if bounds == (None,) * 4 else bounds,
        FINITE: finite,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_choice(
    name: str, value: str, choices: Sequence[str], error: type[Exception] = ValueError
) -> None:
    """Raise `error` unless the setting `name`'s `value` is one of `choices`."""
    if value not in choices:
        raise error(f"unknown {name} {value!r} (one of {', '.join(choices)})")


def bounds_text(bounds: tuple[float | None, ...]) -> str:
    """ ">= 1", "> 0" or "lie in [0, 1)": what `check_bound` asks of a value."""
    at_least, above, at_most, below = bounds
    low = at_least if above is None else above
    high = at_most if below is None else below
    if high is None:
        return f">= {at_least:g}" if above is None else f"> {above:g}"
    if low is None:
        return f"<= {at_most:g}" if below is None else f"< {below:g}"
    left = "[" if above is None else "("
    right = "]" if below is None else ")"
    return f"lie in {left}{low:g}, {high:g}{right}"


def within(value: float, bounds: tuple[float | None, ...]) -> bool:
    """Whether `value` meets `bounds` (at_least, above, at_most, below); NaN fails."""
    at_least, above, at_most, below = bounds
    checks = (
        at_least is None or value >= at_least,
        above is None or value > above,
        at_most is None or value <= at_most,
        below is None or value < below,
    )
    return all(checks) and value == value


def check_bound(
    name: str,
    value: float | None,
    bounds: tuple[float | None, ...],
    error: type[Exception] = ValueError,
    *,
    finite: bool = False,
) -> None:
    """Raise `error` unless `value` (None passes) meets `bounds` (and is finite)."""
    if value is None or (
        within(value, bounds) and (math.isfinite(value) or not finite)
    ):
        return
    text = bounds_text(bounds)
    if finite:
        text = "positive" if bounds == (None, 0, None, None) else text
        text += " and finite"
    verb = "must" if text.startswith("lie") else "must be"
    raise error(f"{name} {verb} {text}, not {value}")


def check_settings(config: object, error: type[Exception]) -> None:
    """Check every field of `config` against its `setting` choices and bounds.

    A message names the field by its option's name where that differs (the
    strategy, not `StrategyConfig.name`).
    """
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        meta = field.metadata
        name = (meta.get(FLAG) or field.name).replace("-", "_")
        if meta.get(CHOICES) is not None:
            check_choice(name, value, meta[CHOICES], error)
        if meta.get(BOUNDS) is not None:
            check_bound(name, value, meta[BOUNDS], error, finite=bool(meta.get(FINITE)))
        elif meta.get(FINITE) and value is not None and not math.isfinite(value):
            raise error(f"{name} must be finite, not {value}")


# A training config's gradient clip was `clip_norm` until it was renamed, so that
# `clip_norm` means DP's bound on a whole update alone: old name -> new name.
GRAD_CLIP_RENAME = {"clip_norm": "grad_clip_norm"}
# A fleet's phones per user were `shard_messages`, the word central's data
# shards keep.
FLEET_RENAME = {"shard_messages": "messages_per_phone"}
# A local-only run's per-model held-out sample was `heldout_messages`, the word
# the federated and central runs keep for their one held-out sample.
LOCAL_ONLY_RENAME = {
    **GRAD_CLIP_RENAME,
    "heldout_messages": "heldout_messages_per_model",
}


def renamed(values: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A copy of a saved config's `values` with old field names replaced, so
    that a run saved before a rename loads with its own settings."""
    return {names.get(k, k): v for k, v in values.items()}
