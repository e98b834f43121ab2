"""Find processes by a variable in their environment without ever hanging on one of them.

Reading ``/proc/PID/environ`` reads the target's memory and waits for its memory-map lock; a process stuck
in uninterruptible sleep (D state: a dead NFS server, a stuck FUSE mount) can hold that lock for minutes,
and a plain ``read()`` then hangs the reader with it. Stop, sweep and the test suite's leftover guard all
scan every process this way, so one such process anywhere on the machine used to hang all three.

Policy:

- Cheap filters first, from ``/proc/PID/stat`` (which never touches the target's memory): zombies are
  skipped (no environment left), and with ``not_before`` every process that started earlier is skipped
  (what a test session or a supervisor started cannot be older than the session or the supervisor).
- The environment is read on a helper thread and waited for with a per-process deadline; a read that
  does not answer in time is abandoned (the helper is a daemon thread, replaced by a fresh one) and the
  process is reported in ``FoundProcesses.unreadable`` instead of blocking the caller. A whole scan also
  has an overall deadline. Where no thread can be started, the environment is read inline.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

READ_TIMEOUT_S = 0.5
SCAN_BUDGET_S = 10.0


@dataclass(frozen=True)
class ProcStat:
    """The two fields of ``/proc/PID/stat`` the scan needs."""

    state: str  # R, S, D, Z, T, ...
    start_ticks: int  # start time in clock ticks after boot


@dataclass(frozen=True)
class FoundProcesses:
    matches: tuple[int, ...]
    unreadable: tuple[int, ...]  # candidates whose environment did not answer in time (or the budget ran out)


def parse_stat(text: str) -> ProcStat | None:
    """Parse ``/proc/PID/stat``; the command name may hold spaces and parentheses, so split after the last ')'."""
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        return None
    try:
        return ProcStat(state=fields[0], start_ticks=int(fields[19]))
    except ValueError:
        return None


def read_stat(pid: int | str, *, proc: Path = Path("/proc")) -> ProcStat | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text(errors="replace"))
    except OSError:
        return None


def own_start_ticks(*, proc: Path = Path("/proc")) -> int | None:
    """This process's start time in ticks after boot (a ``not_before`` for what it starts later)."""
    stat = read_stat("self", proc=proc)
    return stat.start_ticks if stat is not None else None


class _EnvironReader:
    """One daemon thread that reads files on request; abandoned (and replaced) when a read hangs.

    When the kernel refuses the thread (no processes or memory left: exactly when a sweep is needed most),
    the reads are made inline: a scan that could hang on a stuck process beats one that cannot run at all.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._inline = False
        try:
            threading.Thread(target=self._serve, name="environ-reader", daemon=True).start()
        except RuntimeError:  # "can't start new thread"
            self._inline = True

    def _serve(self) -> None:
        while True:
            path = self._requests.get()
            if path is None:
                return
            try:
                with open(path, "rb") as handle:
                    self._answers.put(handle.read())
            except OSError:
                self._answers.put(None)

    def read(self, path: Path, *, timeout: float) -> tuple[bool, bytes | None]:
        """(answered, content); content None when the file could not be read."""
        if self._inline:
            try:
                with open(path, "rb") as handle:
                    return True, handle.read()
            except OSError:
                return True, None
        self._requests.put(path)
        try:
            return True, self._answers.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return False, None

    def close(self) -> None:
        self._requests.put(None)


def find_by_environ(
    needle: bytes,
    *,
    exclude: tuple[int, ...] | list[int] = (),
    not_before: int | None = None,
    read_timeout_s: float = READ_TIMEOUT_S,
    budget_s: float = SCAN_BUDGET_S,
    proc: Path = Path("/proc"),
) -> FoundProcesses:
    """Pids (other than this process and ``exclude``) with an environment entry starting with ``needle``."""
    skip = {os.getpid(), *exclude}
    deadline = time.monotonic() + budget_s
    matches: list[int] = []
    unreadable: list[int] = []
    reader = _EnvironReader()
    try:
        for name in os.listdir(proc):
            if not name.isdigit() or int(name) in skip:
                continue
            stat = read_stat(name, proc=proc)
            if stat is None or stat.state in ("Z", "X"):
                continue  # gone, or a zombie: nothing left to read or to kill
            if not_before is not None and stat.start_ticks < not_before:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                unreadable.append(int(name))
                continue
            answered, environ = reader.read(proc / name / "environ", timeout=min(read_timeout_s, left))
            if not answered:
                unreadable.append(int(name))
                reader.close()  # it exits once its stuck read returns
                reader = _EnvironReader()  # the old one is stuck in the kernel; it ends when the read does
                continue
            if environ is not None and any(entry.startswith(needle) for entry in environ.split(b"\0")):
                matches.append(int(name))
    finally:
        reader.close()
    return FoundProcesses(matches=tuple(matches), unreadable=tuple(unreadable))
