"""Is every folder under ``Tasks/`` really watched? Ask the kernel, not the watching library.

watchdog adds one inotify watch per folder and silently skips a sub-folder whose watch cannot be added (the
per-user watch limit reached, ENOSPC): the watcher would look healthy while edits in those folders are never
noticed. The kernel lists every watch of this process in ``/proc/self/fdinfo/<inotify fd>`` with the
watched inode, so comparing that with the folders on disk finds the gaps whatever the library did.

Policy:

- The folders that should be watched are ``Tasks/`` and every folder below it reached without following a
  symlink (watchdog does not follow them either).
- A symlink under ``Tasks/`` that loops (ELOOP) or points to one of its own ancestors is reported as a
  loop; nothing here follows it.
- When this process has no inotify descriptor, or ``/proc`` cannot be read, coverage is unknown and nothing
  is claimed.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

_WATCH_LINE = re.compile(r"^inotify wd:\s*\S+\s+ino:\s*([0-9a-fA-F]+)\b", re.MULTILINE)
_SHOWN = 5  # folders named in a message; the rest are counted


@dataclass(frozen=True)
class Coverage:
    """What one check found."""

    known: bool  # False: this process's inotify watches could not be read (not inotify, no /proc)
    folders: int  # folders that should be watched
    unwatched: tuple[str, ...]  # of those, the ones without a watch
    loops: tuple[str, ...]  # symlinks under Tasks/ that loop

    def describe_unwatched(self) -> str:
        shown = ", ".join(self.unwatched[:_SHOWN])
        more = f" and {len(self.unwatched) - _SHOWN} more" if len(self.unwatched) > _SHOWN else ""
        return f"{len(self.unwatched)} of {self.folders} folders are not watched ({shown}{more})"


def watched_inodes_from_fdinfo(text: str) -> set[int]:
    """Inode numbers of the watches listed in one inotify fd's fdinfo text (pure)."""
    return {int(match, 16) for match in _WATCH_LINE.findall(text)}


def watched_inodes(proc_self: Path = Path("/proc/self")) -> set[int] | None:
    """Inodes watched by every inotify descriptor of this process; None when there is none or no /proc."""
    try:
        fds = os.listdir(proc_self / "fd")
    except OSError:
        return None
    found: set[int] | None = None
    for fd in fds:
        try:
            if os.readlink(proc_self / "fd" / fd) != "anon_inode:inotify":
                continue
            text = (proc_self / "fdinfo" / fd).read_text()
        except OSError:  # closed meanwhile
            continue
        found = (found or set()) | watched_inodes_from_fdinfo(text)
    return found


def check_coverage(tasks_dir: Path, *, watched: set[int] | None = None) -> Coverage:
    """Compare the folders under ``tasks_dir`` with the watched inodes (read from /proc when not given)."""
    inodes = watched if watched is not None else watched_inodes()
    should: list[tuple[str, int]] = []
    loops: list[str] = []

    def note(path: str) -> None:
        try:
            should.append((path, os.lstat(path).st_ino))
        except OSError:
            pass  # gone meanwhile

    top = os.fspath(tasks_dir)
    note(top)
    for root, dirs, files in os.walk(top, onerror=lambda _exc: None):
        kept = []
        for name in dirs:
            full = os.path.join(root, name)
            if os.path.islink(full):
                if _is_loop(full):
                    loops.append(full)
                continue
            kept.append(name)
            note(full)
        dirs[:] = kept
        loops.extend(
            os.path.join(root, name)
            for name in files
            if os.path.islink(os.path.join(root, name)) and _is_loop(os.path.join(root, name))
        )
    if inodes is None:
        return Coverage(known=False, folders=len(should), unwatched=(), loops=tuple(sorted(loops)))
    unwatched = tuple(sorted(path for path, ino in should if ino not in inodes))
    return Coverage(known=True, folders=len(should), unwatched=unwatched, loops=tuple(sorted(loops)))


def _is_loop(link: str) -> bool:
    """A symlink that cannot be resolved for looping, or that leads to a folder containing itself."""
    try:
        os.stat(link)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    target = os.path.realpath(link)
    parent = os.path.realpath(os.path.dirname(link))
    return os.path.isdir(target) and (parent == target or parent.startswith(target.rstrip(os.sep) + os.sep))
