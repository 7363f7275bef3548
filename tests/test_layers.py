"""The packages' layers: data flows one way, `corpora` -> `models` -> `device_sim`
-> `coordinator` -> (`tui`, `cli`); `secagg`, the shared crypto, sits under both
sides on `models` alone; `central` stands beside the federated side on `corpora`
and `models` alone. Every import in every module is read with `ast`,
those inside functions and under `TYPE_CHECKING` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import run_python

ROOT = Path(__file__).resolve().parent.parent
# Which other packages each package may import from.
ALLOWED: dict[str, frozenset[str]] = {
    "corpora": frozenset(),
    "models": frozenset({"corpora"}),
    "secagg": frozenset({"models"}),
    "device_sim": frozenset({"corpora", "models", "secagg"}),
    "coordinator": frozenset({"corpora", "models", "secagg", "device_sim"}),
    "central": frozenset({"corpora", "models"}),
    # The UI never reaches into the command line.
    "tui": frozenset(
        {"corpora", "models", "secagg", "device_sim", "coordinator", "central"}
    ),
    "cli": frozenset(
        {"corpora", "models", "secagg", "device_sim", "coordinator", "central", "tui"}
    ),
}
PACKAGES = frozenset(ALLOWED)


def imported_packages(source: str, package: str) -> set[tuple[int, str]]:
    """(line, top-level package) of each import of one of `PACKAGES` in `source`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import stays inside its own package.
            names = [package if node.level else (node.module or "")]
        else:
            continue
        found |= {(node.lineno, n.split(".")[0]) for n in names}
    return {(line, top) for line, top in found if top in PACKAGES}


def layer_violations(source: str, package: str) -> list[str]:
    """'line: package' for each import in `source` that `package` may not make."""
    allowed = ALLOWED[package] | {package}
    found = imported_packages(source, package)
    return [f"{line}: {top}" for line, top in sorted(found) if top not in allowed]


def test_layer_violations_flags_an_upward_import() -> None:
    # Prepare: a models module that reaches up into the coordinator, lazily.
    source = (
        "from corpora.tokenizer import WORD\n"
        "def f():\n"
        "    from coordinator.round.rounds import run_round\n"
        "    import tui.app\n"
    )

    # Execute
    violations = layer_violations(source, "models")

    # Assert
    assert violations == ["3: coordinator", "4: tui"]


def test_layer_violations_allows_relative_and_lower_imports() -> None:
    # Prepare
    source = "from . import config\nfrom models.model import NextWordModel\n"

    # Execute
    violations = layer_violations(source, "central")

    # Assert
    assert violations == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_lower_layers(package: str) -> None:
    # Prepare
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, package

    # Execute
    found = {
        str(path.relative_to(ROOT)): layer_violations(path.read_text(), package)
        for path in modules
    }

    # Assert
    assert {name: v for name, v in found.items() if v} == {}


def test_central_launch_loads_no_federated_package() -> None:
    # Prepare: a fresh interpreter, as `python -m central RUN_DIR` under torchrun.
    script = (
        "import sys\n"
        "import central.launch\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'cli', 'coordinator', 'device_sim', 'tui'}))\n"
    )

    # Execute
    done = run_python(script)

    # Assert
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
