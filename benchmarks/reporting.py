"""What the measuring benchmarks share: the machine's load, and their figures
printed and, on request, saved as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from models.files import atomic_write_text


def load_average() -> tuple[float, float]:
    """The 1- and 5-minute load averages, or nan where the OS does not say."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return float("nan"), float("nan")
    return one, five


def report_figures(
    report: dict[str, Any],
    show: Callable[[dict[str, Any], Console], None],
    *,
    console: Console,
    json_path: str | None,
) -> None:
    """Print `report` with `show`; with `json_path`, also write it there (JSON)."""
    show(report, console)
    if json_path:
        atomic_write_text(Path(json_path), json.dumps(report, indent=1) + "\n")
