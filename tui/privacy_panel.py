"""Privacy on screen: the epsilon spent so far and what the server saw this round.

Both read a round's metrics.jsonl line as the coordinator writes it: `epsilon`,
`delta`, `sampling_probability` from the private round, and `attack` from the
curious-server probe (coordinator.measure.attack_probe), whose "words" are the server's
own view: recovered from one phone's update without secure aggregation, from the
round's sum with it, from the noisy sum under DP. The words live only in the
line the round returns (metrics.jsonl keeps the scores, `coordinator.privacy.released`),
so a line read back from the log shows the scores alone.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from coordinator.privacy.dp import NO_PRIVACY_LABEL, NOISE_SOURCES
from tui.fleet import THIS_PHONE
from tui.panel import Panel


def privacy_line(record: dict[str, Any], *, target: float | None = None) -> Text:
    """`ε 1.23 (δ 1e-05, target 8)` or `no DP`, for this fleet's own phones.

    With a simulated deployment (`simulated_privacy`), a second line gives the
    epsilon of the deployment whose noise the round used, and the target then
    belongs to that line: it is the deployment's budget, not the fleet's.
    """
    text = Text(no_wrap=True, overflow="ellipsis")
    epsilon = record.get("epsilon")
    if not isinstance(epsilon, int | float):
        text.append("no DP", "dim")
        return text
    deployment = record.get("simulated_privacy")
    simulated = isinstance(deployment, dict)
    text.append("ε ", "dim")
    text.append(f"{epsilon:.3g}", "bold")
    text.append(_extras(record.get("delta"), None if simulated else target))
    text.append("\nthis fleet's phones", "dim")
    if record.get("noise_source") == NOISE_SOURCES[True]:
        text.append(f"\n{NO_PRIVACY_LABEL}", "bold red")
    if simulated:
        assert isinstance(deployment, dict)
        text.append("\nε ", "dim")
        text.append(f"{deployment.get('epsilon', float('nan')):.3g}", "bold")
        text.append(_extras(deployment.get("delta"), target))
        text.append(
            f"\n{deployment.get('population', 0):,} phones, "
            f"{deployment.get('cohort_size', 0):,} a round (simulated)",
            "dim",
        )
    return text


def _extras(delta: Any, target: float | None) -> str:
    """` (δ 1e-05, target 8)`, or only what is known, or nothing."""
    extras = []
    if isinstance(delta, int | float):
        extras.append(f"δ {delta:g}")
    if target is not None:
        extras.append(f"target {target:g}")
    return f" ({', '.join(extras)})" if extras else ""


# A round read back from metrics.jsonl, which keeps no words.
_NOT_LOGGED = "(the words are not kept in the run log)"


def _score(part: dict[str, Any]) -> str:
    def pct(value: Any) -> str:
        return f"{value:.0%}" if isinstance(value, int | float) else "–"

    return f"precision {pct(part.get('precision'))}, recall {pct(part.get('recall'))}"


def server_saw(record: dict[str, Any], *, client_id: str = THIS_PHONE) -> Text | None:
    """What the curious server recovered this round, or None without a probe.

    A phone's own update when the server saw one (this phone's if it was
    attacked, else the first attacked phone's), otherwise the noisy sum under DP,
    otherwise the plain (or unmasked SecAgg) sum.
    """
    attack = record.get("attack")
    if not isinstance(attack, dict) or not attack:
        return None
    text = Text()
    update = attack.get("update")
    if isinstance(update, dict) and update.get("words"):
        words = update["words"]
        phone = client_id if client_id in words else next(iter(words))
        who = "this phone's" if phone == client_id else f"phone {phone[:8]}'s"
        text.append(f"from {who} update\n", "dim")
        text.append(" ".join(words[phone]) or "(nothing)", "bold")
        text.append(f"\n{_score(update)}", "dim")
        return text
    if isinstance(update, dict):
        text.append("from single phones' updates\n", "dim")
        text.append(_NOT_LOGGED, "dim italic")
        text.append(f"\n{_score(update)}", "dim")
        return text
    for name, label in (("noisy", "the noisy sum (DP)"), ("sum", "the round's sum")):
        part = attack.get(name)
        if isinstance(part, dict):
            text.append(f"no single update; from {label}\n", "dim")
            words = part.get("words")
            if words is None:
                text.append(_NOT_LOGGED, "dim italic")
            else:
                text.append(" ".join(words) or "(nothing)", "bold")
            text.append(f"\n{_score(part)}", "dim")
            return text
    return None


class ServerSawPanel(Panel):
    """The words the honest-but-curious server recovered in the latest round."""

    TITLE = "what the server saw this round"
    DEFAULT_CSS = """
    ServerSawPanel {
        border: round $warning;
        border-title-color: $warning;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.display = False

    def show_record(self, record: dict[str, Any]) -> None:
        """Draw `record`'s attack; hidden when the round carries none."""
        text = server_saw(record)
        self.display = text is not None
        if text is not None:
            self.update(text)
