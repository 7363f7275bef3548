"""dp_accounting's convergence warnings do not reach a run's output."""

from __future__ import annotations

import logging

import pytest

from coordinator.privacy.accountant import epsilon_for


def test_epsilon_at_a_hard_order_logs_no_absl_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: q = 0.0990, z = 0.7410 (a DP round of the privacy table), where
    # dp_accounting's fractional orders 1.5 and 1.6 fail to converge.
    caplog.set_level(logging.WARNING)

    # Execute
    epsilon = epsilon_for(
        sampling_probability=0.099010, noise_multiplier=0.740967, rounds=1, delta=1e-5
    )

    # Assert: a finite epsilon, and nothing logged on the way.
    assert 0 < epsilon < float("inf")
    assert [r for r in caplog.records if r.name == "absl"] == []
    assert logging.getLogger("absl").level == logging.NOTSET
