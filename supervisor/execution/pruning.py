"""The careful half of Output/ retention: list the regular files under a task's Output/ and remove the ones
``retention.plan_prune`` picks, without ever touching anything outside Output/.

Policy (docs/cli.md "Output retention"):
* Output/ is opened with O_NOFOLLOW: when it is itself a symlink (or not a folder) nothing is done and the
  result says why (the caller logs it once).
* Every folder below is opened relative to its parent's descriptor with O_DIRECTORY | O_NOFOLLOW, and every
  file is stat'ed and unlinked by name relative to its folder's descriptor (``dir_fd``). A symlink is never
  followed: symlinks to files or folders are neither counted nor removed, and a folder swapped for a symlink
  between the listing and the removal fails to open (ELOOP) and is left alone. An unlink only ever removes
  an entry of a folder we opened inside Output/, so it cannot reach a file elsewhere.
* Only regular files count and are removed; FIFOs, sockets and devices are left alone. Folders on another
  filesystem (a mount point inside Output/) are not entered.
* Before each unlink the entry must still be the file that was listed (same device and inode), and ``busy()``
  must say no run of the task is in flight; once one is, pruning stops before the next file.
* Folders are removed only when pruning emptied them (``rmdir``, which refuses a folder that is not empty),
  never Output/ itself and never a folder that was empty before.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..model import Retention
from .retention import OutputFile, plan_prune

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 64  # deeper folders are not entered (each level holds a descriptor while it is listed)


@dataclass(frozen=True)
class PruneResult:
    removed: int = 0  # regular files removed
    freed: int = 0  # their bytes
    folders: int = 0  # folders removed because pruning emptied them
    kept: int = 0  # regular files left
    skipped: str | None = None  # why Output/ was not touched at all
    stopped: bool = False  # a run of the task started: pruning stopped before the next file
    problems: tuple[str, ...] = ()  # entries that could not be read or removed (each one line)

    def describe(self) -> str:
        """One line: the count and bytes removed, what was left and why it stopped early."""
        if self.skipped is not None:
            return self.skipped
        line = f"removed {self.removed} file(s), {self.freed} bytes freed"
        if self.folders:
            line += f", {self.folders} emptied folder(s)"
        line += f"; {self.kept} file(s) kept"
        if self.stopped:
            line += "; stopped early: a run of the task started"
        if self.problems:
            line += f"; {len(self.problems)} problem(s), first: {self.problems[0]}"
        return line


def prune_output(
    output: Path, retention: Retention, *, now: float, busy: Callable[[], bool] = lambda: False
) -> PruneResult:
    """Apply ``retention`` to the folder ``output`` (a task's Output/) at ``now`` (epoch seconds)."""
    if not retention.enabled:
        return PruneResult(skipped="no [Output] limit: Output/ left alone")
    try:
        root = os.open(output, _DIR_FLAGS)
    except FileNotFoundError:
        return PruneResult(skipped=f"{output}: no such folder: nothing to prune")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return PruneResult(skipped=f"{output} is a symlink or not a folder: left alone")
        return PruneResult(skipped=f"{output}: cannot be opened: {exc.strerror or exc}")
    try:
        problems: list[str] = []
        files: list[OutputFile] = []
        _list(root, (), files, problems, device=os.fstat(root).st_dev)
        plan = plan_prune(files, retention, now=now)
        result = _remove(root, plan, problems, busy=busy)
        return PruneResult(
            removed=result.removed,
            freed=result.freed,
            folders=result.folders,
            kept=len(files) - result.removed,
            stopped=result.stopped,
            problems=tuple(problems),
        )
    finally:
        os.close(root)


def _open_dir(name: str, parent: int, *, device: int) -> int | None:
    """A descriptor of the folder ``name`` in ``parent``; None when it is a symlink now, gone, or elsewhere."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None  # ELOOP (swapped for a symlink), ENOTDIR, ENOENT: not a folder of ours any more
    if os.fstat(fd).st_dev != device:
        os.close(fd)
        return None
    return fd


def _list(folder: int, prefix: tuple[str, ...], files: list[OutputFile], problems: list[str], *, device: int) -> None:
    """Append every regular file under ``folder`` (depth-first, no symlink followed) to ``files``."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        problems.append(f"{'/'.join(prefix) or '.'}: cannot be listed: {exc.strerror or exc}")
        return
    for name in sorted(names):
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed by the task meanwhile
        except OSError as exc:
            problems.append(f"{'/'.join((*prefix, name))}: {exc.strerror or exc}")
            continue
        if stat.S_ISREG(st.st_mode):
            files.append(OutputFile((*prefix, name), st.st_size, st.st_mtime, (st.st_dev, st.st_ino)))
        elif stat.S_ISDIR(st.st_mode) and len(prefix) < MAX_DEPTH and st.st_dev == device:
            sub = _open_dir(name, folder, device=device)
            if sub is not None:
                try:
                    _list(sub, (*prefix, name), files, problems, device=device)
                finally:
                    os.close(sub)


@dataclass
class _Tally:
    removed: int = 0
    freed: int = 0
    folders: int = 0
    stopped: bool = False


def _open_path(root: int, parts: Sequence[str], *, device: int) -> int | None:
    """Walk from ``root`` down ``parts`` one O_NOFOLLOW step at a time; the caller closes the result."""
    fd = os.dup(root)
    for part in parts:
        sub = _open_dir(part, fd, device=device)
        os.close(fd)
        if sub is None:
            return None
        fd = sub
    return fd


def _remove(root: int, plan: Sequence[OutputFile], problems: list[str], *, busy: Callable[[], bool]) -> _Tally:
    tally = _Tally()
    device = os.fstat(root).st_dev
    by_folder: dict[tuple[str, ...], list[OutputFile]] = defaultdict(list)
    for item in plan:
        by_folder[item.parts[:-1]].append(item)
    emptied: list[tuple[str, ...]] = []
    for parts, items in by_folder.items():
        if tally.stopped:
            break
        folder = _open_path(root, parts, device=device)
        if folder is None:
            continue  # the folder changed since it was listed: leave it alone
        try:
            if _unlink_all(folder, items, problems, tally, busy=busy) and parts:
                emptied.append(parts)
        finally:
            os.close(folder)
    for parts in sorted(emptied, key=len, reverse=True):
        _remove_emptied(root, parts, tally, device=device)
    return tally


def _unlink_all(
    folder: int, items: Sequence[OutputFile], problems: list[str], tally: _Tally, *, busy: Callable[[], bool]
) -> bool:
    """Unlink ``items`` in ``folder`` while they are still the files listed; True when any was removed."""
    any_removed = False
    for item in items:
        if busy():
            tally.stopped = True
            break
        name = item.parts[-1]
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != item.ident:
                continue  # replaced since the listing (by a symlink, a folder or a new file): not ours to remove
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{'/'.join(item.parts)}: cannot be removed: {exc.strerror or exc}")
            continue
        tally.removed += 1
        tally.freed += st.st_size
        any_removed = True
    return any_removed


def _remove_emptied(root: int, parts: tuple[str, ...], tally: _Tally, *, device: int) -> None:
    """rmdir ``parts`` and then each parent that became empty, up to (never including) Output/."""
    while parts:
        parent = _open_path(root, parts[:-1], device=device)
        if parent is None:
            return
        try:
            os.rmdir(parts[-1], dir_fd=parent)
        except OSError:
            return  # not empty (ENOTEMPTY), a symlink now (ENOTDIR), gone: stop here
        finally:
            os.close(parent)
        tally.folders += 1
        parts = parts[:-1]
