"""The layer order in pyproject.toml (``[tool.importlinter]``) holds: no upward import, no import between two
edges, no cycle. Also: the linter sees function-level imports, and every edge entry point the CLI names by
dotted path resolves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli.edges import EDGES

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports comes with the test extra; it puts its cwd first on sys.path, so `supervisor` is the one there.
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=100,
    )


def test_the_package_keeps_its_import_contracts() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_a_function_level_upward_import_and_a_sideways_cycle_break_the_contracts(tmp_path: Path) -> None:
    """Guard against a linter that reads only top-level imports: plant lazy imports in a copy of the package."""
    shutil.copytree(REPO / "supervisor", tmp_path / "supervisor", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "supervisor" / "history" / "store.py", "a") as f:
        f.write("\n\ndef _planted() -> object:\n    from ..cli import entry\n\n    return entry\n")
    with open(tmp_path / "supervisor" / "envs" / "locks.py", "a") as f:
        f.write("\n\ndef _planted() -> object:\n    from ..discovery import scan\n\n    return scan\n")
    with open(tmp_path / "supervisor" / "discovery" / "scan.py", "a") as f:
        f.write("\n\ndef _planted() -> object:\n    from ..envs import locks\n\n    return locks\n")
    result = _lint_imports(tmp_path)
    out = result.stdout
    assert result.returncode != 0, out
    assert "layers (an import goes down, or sideways within a layer) BROKEN" in out, out
    assert "supervisor.history.store -> supervisor.cli.entry" in out, out
    assert "no import cycle between sibling packages or modules BROKEN" in out, out
    assert ".discovery -> .envs" in out or ".envs -> .discovery" in out, out


@pytest.mark.parametrize("entry", sorted(EDGES))
def test_every_edge_entry_point_resolves(entry: str) -> None:
    assert callable(EDGES[entry].resolve())


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.cli.edges import EdgeEntry
    from supervisor.errors import TaskAutomationError

    monkeypatch.setitem(sys.modules, "starlette_missing_probe", None)  # importing it raises ModuleNotFoundError
    entry = EdgeEntry("starlette_missing_probe:serve", what="the dashboard", extra="web")
    with pytest.raises(TaskAutomationError) as caught:
        entry.resolve()
    assert str(caught.value) == (
        "the dashboard needs the web extra (starlette_missing_probe is missing): pip install 'taskautomation[web]'"
    )
