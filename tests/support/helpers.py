"""Test helpers: condition waits with deadlines, tiny wheels built on the spot, task folders."""

from __future__ import annotations

import base64
import hashlib
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``.

    This is a deadline on a condition, not a sleep used as synchronisation: it returns as soon as the
    condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(dest: Path, name: str, version: str, *, module_source: str | None = None) -> Path:
    """Write a minimal pure-Python wheel ``name-version`` into ``dest`` and return its path.

    The wheel holds one module ``name`` whose ``__version__`` is ``version`` (or ``module_source``).
    Built by hand with zipfile so tests need neither the network nor a build backend.
    """
    dest.mkdir(parents=True, exist_ok=True)
    norm = name.replace("-", "_")
    dist_info = f"{norm}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{norm}/__init__.py": (module_source or f"__version__ = {version!r}\n").encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: taskautomation-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(path, data) for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = dest / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def write_task(
    tasks_dir: Path,
    name: str,
    *,
    main: str = "def main():\n    return 'done'\n",
    initialize: str | None = "def initialize():\n    return 'ready'\n",
    config: str = "[Frequency]\nEveryXMinutes = 60\n",
    requirements: str = "",
    extra: dict[str, str] | None = None,
) -> Path:
    """Create Tasks/NAME with main.py, config.ini, requirements.txt and Output/."""
    folder = tasks_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    source = textwrap.dedent(main)
    if initialize is not None:
        source += "\n\n" + textwrap.dedent(initialize)
    (folder / "main.py").write_text(source)
    (folder / "config.ini").write_text(textwrap.dedent(config))
    (folder / "requirements.txt").write_text(requirements)
    (folder / "Output").mkdir(exist_ok=True)
    for rel, text in (extra or {}).items():
        (folder / rel).write_text(textwrap.dedent(text))
    return folder


def wall_clock_offset() -> float:
    """``time.time() - time.monotonic()``: constant unless the wall clock is stepped (a fresh CI machine's
    NTP sync steps it by minutes), so two readings tell a test how far the clock jumped in between."""
    return time.time() - time.monotonic()


def without_dac_override() -> list[str]:
    """An argv prefix that runs a command as root *without* the right to read any file (util-linux setpriv),
    so "unreadable file" tests mean something when the suite runs as root."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


LAUNCHERS = ("spawn", "fork")  # [Supervisor] Launcher values: the run-contract tests run under each


def use_launcher(home: Path, launcher: str, *, extra: str = "") -> None:
    """Write HOME/taskautomation.ini choosing ``launcher`` (plus ``extra`` lines of [Supervisor])."""
    (home / "taskautomation.ini").write_text(f"[Supervisor]\nLauncher = {launcher}\n{extra}")
