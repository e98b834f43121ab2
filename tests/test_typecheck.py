"""The package's type hints are checked, so they stay true as the code changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def test_supervisor_package_type_checks() -> None:
    # mypy comes with the test extra (pip install -e '.[test]'): without it this fails, it never skips.
    # Its incremental cache (git-ignored .mypy_cache) keeps `pytest -m unit` quick after the first run.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "supervisor",
            "--ignore-missing-imports",
            "--cache-dir",
            str(REPO / ".mypy_cache"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
