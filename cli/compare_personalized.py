"""The personalised corner of `fedtype compare`: a federated run's gated personal
models (`fedtype personalize`, its personalization.json) beside its own row.

The report is shown only when it measured the global model of the run's last
evaluation on the same future text, so that the two rows compare.
"""

from __future__ import annotations

from typing import Any

from coordinator.run.personalization import (
    REPORT_NAME,
    PersonalizationReport,
    read_report,
)
from models.rundir import RunDir, RunDirError

# The kind shown for a federated run's personal models.
PERSONALIZED = "federated + personalised"


def personal_variant(report: PersonalizationReport) -> str:
    """The phone's own model in the report: gated+memory, or gated in older ones."""
    return "gated+memory" if "gated+memory" in report.future else "gated"


def personalized_report(
    run: RunDir, final: dict[str, Any], server_round: int
) -> tuple[PersonalizationReport | None, tuple[str, ...]]:
    """The run's personalisation report, if it measured the model of the row's
    evaluation on the same future text; else None, and a note when it has one.
    """
    try:
        report = read_report(run)
    except RunDirError as error:
        return None, (f"{error}; the personalised row is left out",)
    if report is None:
        return None, ()
    future = final.get("future")
    future = future if isinstance(future, dict) else {}
    measured = report.future["global"]
    if (report.server_round, measured.num_targets, measured.num_messages) != (
        server_round,
        future.get("num_targets"),
        future.get("num_messages"),
    ):
        return None, (
            f"{run.path / REPORT_NAME}: round {report.server_round} on "
            f"{measured.num_targets:,} future targets, but the run's last "
            f"evaluation is round {server_round} on {future.get('num_targets', '?')}; "
            f"the personalised row is left out (rerun fedtype personalize --run "
            f"{run.path})",
        )
    return report, ()


def personalized_setting(report: PersonalizationReport) -> str:
    """How a federated run's phones personalised, for the report's settings."""
    return (
        f"each of {report.phones:,} future-cohort phones fine-tuned round "
        f"{report.server_round}'s global model ({report.trained} weights) on its "
        "own train text, kept where it beat the global model on its validation "
        f"slice ({report.kept_share:.1%} of phones)"
        + (
            ", then mixed in a kNN memory of its own text where that beat it there"
            if personal_variant(report) == "gated+memory"
            else ""
        )
    )
