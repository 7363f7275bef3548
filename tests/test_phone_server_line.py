"""The line between the phone's side and the server's, checked from the imports.

The server's side is `coordinator`'s top-level modules (config, errors, events), the
round (`coordinator.round`), the protections (`coordinator.protections`) and the
privacy accounting (`coordinator.privacy`). From `device_sim` it may import only the
public interfaces below: settings, the round's transport handle (`TrainedRound`, whose
summaries and sums are what crosses), the fleet's public profiles and seeded draws,
the public recipe of a protected round, and shared arithmetic. Never a phone's text,
data, training, faults, secrets or masking steps. The simulation harness
(`coordinator.run`, `coordinator.measure`) may see both sides. At run time
`tests/test_privacy.py` checks what crosses.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("coordinator/*.py"))] + [
    str(p.relative_to(ROOT))
    for folder in ("round", "protections", "privacy")
    for p in sorted((ROOT / "coordinator" / folder).glob("*.py"))
]
# The phone-side modules the server may use: public settings and interfaces.
PUBLIC = frozenset(
    {
        "device_sim.config",  # settings
        "device_sim.executor",  # the round's transport: summaries and sums
        "device_sim.fleet",  # the phones' public profiles (eligibility)
        "device_sim.profile",  # the simulation's seeded dropout draws
        "device_sim.recipe",  # what every phone of a protected round does
        "device_sim.clipping",  # flatten / unflatten, shared with the phone
        "device_sim.masked_figures",  # the public scale of the masked losses
        "device_sim.ranks",  # the collectives
        "device_sim.sketch",  # the cosine of two count sketches
    }
)


def device_imports(source: str) -> set[str]:
    """Every `device_sim` module `source` imports (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "device_sim"}
    return found


def test_device_imports_finds_lazy_imports() -> None:
    # Prepare
    source = (
        "def f():\n    from device_sim.phone import Phone\nimport device_sim.truth\n"
    )

    # Execute
    found = device_imports(source)

    # Assert
    assert found == {"device_sim.phone", "device_sim.truth"}


def test_server_side_imports_only_public_phone_interfaces() -> None:
    # Prepare
    assert len(SERVER) > 20, SERVER

    # Execute
    crossing = {
        module: sorted(device_imports((ROOT / module).read_text()) - PUBLIC)
        for module in SERVER
    }

    # Assert
    assert {m: names for m, names in crossing.items() if names} == {}


def test_phone_side_never_imports_the_server() -> None:
    # Prepare
    modules = sorted((ROOT / "device_sim").rglob("*.py")) + sorted(
        (ROOT / "secagg").rglob("*.py")
    )

    # Execute
    upward = {
        str(p.relative_to(ROOT)): [
            line
            for line in p.read_text().splitlines()
            if line.lstrip().startswith(("from coordinator", "import coordinator"))
        ]
        for p in modules
    }

    # Assert
    assert {m: lines for m, lines in upward.items() if lines} == {}
