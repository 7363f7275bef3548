"""The round's protection, chosen once per run: none, SecAgg, DP, or both.

A protection wraps the round instead of branching inside it (Flower's
`DifferentialPrivacyServerSideFixedClipping` wraps an unchanged strategy). Each
has one interface, which `coordinator.round.rounds.run_round` calls in order:

- `sampler.select` / `sampler.goal`: who is asked, and how many reports the
  round waits for (`sampling`);
- `reveals_norms`: whether a phone's summary carries its norm, sketch and
  losses, or only its claimed count and health (SecAgg);
- `screen`: the screen on what the server may see (`coordinator.round.robust`);
- `must_release`: whether a round short of valid reports is still released;
- `aggregate`: the round's pseudo-gradient and what the server held
  (`plain`, `private`);
- `charge_abandoned`: what a round that released nothing costs (`charge`).

Each protection's guarantee is stated once: the sensitivity per user and the
accountant in `coordinator.privacy.dp` and `charge`; what the server sees per phone in
`coordinator.privacy.released`; what a hostile phone can still do in
`coordinator.protections.sum_checks`.
"""

from __future__ import annotations

from coordinator.config import FederationConfig
from coordinator.protections.plain import Plain
from coordinator.protections.private import Private
from coordinator.protections.releases import NoisyMean, WeightedMean
from coordinator.protections.sampling import FixedSize, Poisson
from coordinator.protections.state import PrivacyState, Release
from coordinator.protections.transport import ClearSum, SecureSum

Protection = Plain | Private


def protection_for(config: FederationConfig) -> Protection:
    """The run's protection, from its privacy settings."""
    privacy, dp = config.privacy, config.privacy.dp
    if not privacy.protected:
        return Plain()
    names = [n for n, on in (("secagg", privacy.secure_aggregation), ("dp", dp)) if on]
    return Private(
        name="+".join(names),
        sampler=FixedSize() if dp is None else Poisson(),
        transport=SecureSum if privacy.secure_aggregation else ClearSum,
        release=WeightedMean() if dp is None else NoisyMean(),
    )


__all__ = [
    "PrivacyState",
    "Protection",
    "Release",
    "protection_for",
]
