"""Reading a task log as it grows, across rotation: for ``logs -f`` and ``run-now --wait``.

Policy: the follower keeps its file open; when the path names a different file (the logging handler
renamed the full one to ``NAME.log.1`` and opened a new ``NAME.log``) it finishes the old file first and then
goes on with the new one, from its start, so no line written around a rotation is lost or repeated. Lines are
returned whole; a partial last line waits for its newline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


class LogFollower:
    """Yields the complete lines appended to ``path`` since ``start`` (a byte offset; None = the end)."""

    def __init__(self, path: Path, *, start: int | None = None) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._pending = b""
        self._start = start

    def _open(self) -> BinaryIO | None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return None
        if self._start is None:
            f.seek(0, os.SEEK_END)
        else:
            size = os.fstat(f.fileno()).st_size
            f.seek(self._start if self._start <= size else 0)  # smaller than the offset: rotated meanwhile
        self._start = 0  # files opened after a rotation are read from their start
        return f

    def read_lines(self) -> list[str]:
        """Every complete line written since the last call (empty when there is nothing new)."""
        if self._file is None:
            self._file = self._open()
            if self._file is None:
                self._start = 0  # created later: everything in it is new
                return []
        lines: list[str] = []
        while True:
            chunk = self._file.read()
            if chunk:
                self._pending += chunk
                *complete, self._pending = self._pending.split(b"\n")
                lines.extend(line.decode("utf-8", "replace") for line in complete)
                continue
            if not self._rotated():
                return lines
            self._file.close()
            self._file = self._open()
            if self._file is None:
                return lines

    def _rotated(self) -> bool:
        assert self._file is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False  # between the rename and the new file: look again on the next call

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
