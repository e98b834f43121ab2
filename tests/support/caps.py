"""Outer safety caps for dangerous tests (fork bombs, memory hogs): a cgroup v1 group the test creates itself.

A test puts the supervisor it drives (a child process, or the test process itself for an in-process
supervisor) into the cap *before* any run starts, so every run group the supervisor makes is nested below it
and the cap holds whatever the code under test does. The cap is torn down in a ``finally``: everything left
inside is killed (frozen first where the freezer is available), then the groups are removed bottom-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from supervisor.execution.cgroup_layout import detect_layout


def own_v1_group(controller: str) -> Path:
    """This process's own group in the v1 ``controller`` hierarchy; skips the test where none is writable."""
    own = detect_layout().v1.get(controller)
    if own is None or not os.access(own, os.W_OK) or os.geteuid() != 0:
        pytest.skip(f"needs a writable cgroup v1 {controller} hierarchy (root on these machines)")
    return own


@contextlib.contextmanager
def outer_cap(controller: str, limits: dict[str, str]) -> Iterator[Path]:
    """A fresh group below our own in ``controller``'s hierarchy with ``limits`` written into it."""
    group = own_v1_group(controller) / f"taskautomation-test-cap-{uuid.uuid4().hex[:10]}"
    group.mkdir()
    try:
        for name, value in limits.items():
            (group / name).write_text(value)
        yield group
    finally:
        destroy(group)


def destroy(group: Path, *, timeout_s: float = 20.0) -> None:
    """Kill every process in ``group`` and its subgroups, then remove them all (deepest first)."""
    deadline = time.monotonic() + timeout_s
    while group.exists():
        groups = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [group]
        for g in groups:
            for pid in _procs(g):
                if pid != os.getpid():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                g.rmdir()
        if time.monotonic() > deadline:
            raise AssertionError(f"could not remove the test's cap {group}: {[_procs(g) for g in groups]}")
        if group.exists():
            time.sleep(0.02)  # killed processes leave their group when the kernel has torn them down


def _procs(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


@contextlib.contextmanager
def joined(groups: list[Path]) -> Iterator[None]:
    """Move this (test) process into ``groups`` for the block, and back into its own groups afterwards."""
    home_groups = [own_v1_group(_controller(g)) for g in groups]
    try:
        for g in groups:
            (g / "cgroup.procs").write_text(str(os.getpid()))
        yield
    finally:
        for g in home_groups:
            (g / "cgroup.procs").write_text(str(os.getpid()))


def _controller(group: Path) -> str:
    """The v1 controller whose hierarchy ``group`` belongs to (its mount point below /sys/fs/cgroup)."""
    layout = detect_layout()
    for name, own in layout.v1.items():
        if group.is_relative_to(own):
            return name
    raise AssertionError(f"{group} is in no v1 hierarchy of this process")


def pids_peak(group: Path) -> int | None:
    """The most tasks ``group`` held at once (pids.peak, Linux 6.1+), or None where the kernel has no peak."""
    try:
        return int((group / "pids.peak").read_text())
    except (OSError, ValueError):
        return None
