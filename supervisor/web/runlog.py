"""The log lines of one run, read from its task's log and that log's rotations.

Every line a run writes is tagged ``[run RUN_ID]`` by the supervisor; a traceback continues over untagged
lines, which belong to the entry above them (an entry starts with the logging timestamp). Files are read
oldest first (``NAME.log.N`` ... ``NAME.log.1``, ``NAME.log``), so lines come out in the order written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# "2026-11-29 12:00:00,123 INFO    message": how logsetup.FORMAT starts every entry.
_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
MAX_LINES = 20_000  # a run page shows at most this many lines (the newest)


def log_files(log: Path) -> list[Path]:
    """``log`` and its rotations, oldest first."""
    rotations = []
    n = 1
    while True:
        candidate = log.with_name(f"{log.name}.{n}")
        if not candidate.exists():
            break
        rotations.append(candidate)
        n += 1
    return [*reversed(rotations), log]


@dataclass
class RunLineFilter:
    """Keeps the lines of one run from a stream of log lines (state: inside one of its entries)."""

    run_id: str
    inside: bool = False

    def keep(self, line: str) -> bool:
        if _ENTRY.match(line):
            self.inside = f"[run {self.run_id}]" in line
        return self.inside


def read_run_lines(log: Path, run_id: str, *, limit: int = MAX_LINES) -> list[str]:
    """Every line of ``run_id`` in ``log`` and its rotations (the newest ``limit`` of them)."""
    keep = RunLineFilter(run_id)
    lines: list[str] = []
    for path in log_files(log):
        try:
            with open(path, "rb") as f:
                for raw in f:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    if keep.keep(line):
                        lines.append(line)
        except FileNotFoundError:
            continue  # rotated away between listing and opening
    return lines[-limit:]


class LogFollower:
    """Follows a growing log across rotations, like ``tail -F``, yielding only one run's lines.

    It starts at the end of the file as it is when created, or with ``from_start`` at its beginning (the
    rotations are the caller's: :func:`read_run_lines`). Lines still being written (no newline yet) wait for
    their newline.
    """

    def __init__(self, log: Path, run_id: str, *, from_start: bool = False) -> None:
        self._log = log
        self._keep = RunLineFilter(run_id)
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._pending = b""
        try:
            self._file = open(log, "rb")
            if not from_start:
                self._file.seek(0, os.SEEK_END)
            self._inode = os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            pass

    def poll(self) -> list[str]:
        """New lines of the run since the last call (across a rotation)."""
        out: list[str] = []
        if self._file is not None:
            self._take(self._file.read(), out)
        try:
            inode = os.stat(self._log).st_ino
        except FileNotFoundError:
            return out  # between the rotation's rename and the new file
        if inode != self._inode:
            if self._file is not None:
                self._take(self._file.read(), out)  # the rest of the rotated file
                self._file.close()
            self._file = open(self._log, "rb")
            self._inode = os.fstat(self._file.fileno()).st_ino
            self._take(self._file.read(), out)
        return out

    def _take(self, chunk: bytes, out: list[str]) -> None:
        if not chunk:
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if self._keep.keep(line):
                out.append(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
