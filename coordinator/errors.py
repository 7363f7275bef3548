"""The coordinator's one configuration error, and the two narrower names of it.

A setting of a federated run that cannot work raises `FederationConfigError`
(a `models.settings.ConfigError`): the CLI turns it into one line and exit
status 2. Privacy settings raise `PrivacyConfigError` and DP-FedAvg's own
`DPConfigError`, which are kinds of it, so that a caller catches the run's
settings with the one type and a privacy test can still ask for the narrower.
"""

from __future__ import annotations

from models.settings import ConfigError


class FederationConfigError(ConfigError):
    """A federation setting that cannot work; the message says which and why."""


class PrivacyConfigError(FederationConfigError):
    """A privacy setting (SecAgg, DP, the probe) that cannot work."""


class DPConfigError(PrivacyConfigError):
    """A differential-privacy setting that cannot work; the message says which."""
