"""The package passes the linter configured in pyproject.toml (``[tool.ruff]``), so lint stays clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def _ruff() -> list[str]:
    # ruff comes with the test extra (pip install -e '.[test]'): a missing linter fails here, it never skips.
    from ruff.__main__ import find_ruff_bin

    return [find_ruff_bin()] if find_ruff_bin() else [shutil.which("ruff") or "ruff"]


def test_supervisor_package_passes_ruff() -> None:
    result = subprocess.run(
        [*_ruff(), "check", "--no-cache", "supervisor"],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_runs_with_the_repository_configuration() -> None:
    """Guard against a silently ignored config: a rule the config selects must fire on a bad file."""
    result = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--stdin-filename", "supervisor/probe.py", "-"],
        cwd=REPO,
        input="import os\n",
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 1 and "F401" in result.stdout, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    """One formatting (``ruff format``, line length 120) for the package, the tests, the benchmarks and the two
    entry scripts: a diff means someone forgot ``ruff format``."""
    paths = ["supervisor", "tests", "bench", "main.py", "terminate.py"]
    result = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
