"""What a metrics line says the server learned, and what only the simulation knows.

A round's `RoundMetrics` is the simulation's whole record of it, figures taken
from each phone's own report included. The line `Simulation` writes to
metrics.jsonl (and sends with `RoundFinished`) keeps at its top level only what
the server learns under the run's protections; the rest goes under
`simulation_truth`, the simulation's ground truth, never presented as something
the server learned (docs/privacy.md, "What the server sees"):

- no protection: everything stays (the server sees each plain summary);
- secure aggregation: the phones' example counts and losses only as the masked
  sum's totals (`coordinator.protections.releases` files them under
  `masked_sum`, lifted here to the top); their tokens the server never learns;
- differential privacy: only released or accounted figures, so neither the
  phones' counts, losses and tokens, nor the screen's per-phone verdicts, nor
  the phones' evaluation on their own future text (none of them noised).

The attack probe's recovered words are kept in memory (the live TUI panel) and
left out of the log unless the run asks for them (`log_attack_words`).
"""

from __future__ import annotations

from typing import Any

from coordinator.privacy.privacy_config import PrivacyConfig

TRUTH = "simulation_truth"
MASKED_SUM = "masked_sum"
# Figures summed from each phone's own report: plain only without a protection.
PHONE_FIGURES = (
    "num_examples",
    "train_loss",
    "loss_before",
    "loss_after",
    "tokens",
    "tokens_total",
)
# Per-phone figures DP does not cover either (SecAgg's screen sees the claimed
# counts and health flags, and evaluation is not masked, so only DP moves them).
DP_FIGURES = ("rejected", "rejections", "future")
# The attack's inputs whose recovered words the probe records.
ATTACKED = ("update", "sum", "noisy")


def released_line(record: dict[str, Any], privacy: PrivacyConfig) -> dict[str, Any]:
    """`record` with what the server did not learn moved under `simulation_truth`."""
    line = dict(record)
    masked = line.pop(MASKED_SUM, None)
    if not privacy.protected:
        return line
    moved = PHONE_FIGURES + (DP_FIGURES if privacy.dp is not None else ())
    truth = {name: line.pop(name) for name in moved if name in line}
    if privacy.dp is None and isinstance(masked, dict):
        line.update(masked)
    line[TRUTH] = truth
    return line


def logged_line(record: dict[str, Any], privacy: PrivacyConfig) -> dict[str, Any]:
    """The line as metrics.jsonl stores it: the attack's figures, not its words."""
    attack = record.get("attack")
    if privacy.log_attack_words or not isinstance(attack, dict):
        return record
    kept = {
        name: (
            {k: v for k, v in part.items() if k != "words"}
            if name in ATTACKED and isinstance(part, dict)
            else part
        )
        for name, part in attack.items()
    }
    return {**record, "attack": kept}


def figure(record: dict[str, Any], name: str, default: Any = None) -> Any:
    """A line's `name`: the released figure, else the simulation's truth of it.

    For the simulation's own bookkeeping (pacing the demo's central baseline,
    `fedtype compare`'s curves), which may use what the server never learned.
    """
    return with_truth(record).get(name, default)


def with_truth(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with its simulation's truth merged in at the top (released
    figures win), for the readers that compare runs of any protection."""
    truth = record.get(TRUTH)
    return {**truth, **record} if isinstance(truth, dict) else record
