"""`python -m central` (one torchrun worker): rank 0's progress line."""

from __future__ import annotations

import pytest

from central.__main__ import show
from central.events import Evaluated


@pytest.mark.parametrize(
    ("heldout", "shown"),
    [({"top3": 0.0625728987993139}, "6.26%"), (None, "not measured")],
)
def test_progress_line_shows_top3_as_a_percentage(
    heldout: dict[str, float] | None, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a saved evaluation at step 20 (the float a torchrun run printed raw)
    event = Evaluated({"step": 20, "heldout": heldout})

    # Execute
    show(event)

    # Assert
    assert capsys.readouterr().out == f"step 20: held-out top-3 {shown}\n"
