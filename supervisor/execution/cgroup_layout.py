"""Where this process's cgroups are: which hierarchy a run's groups can live in (detection for cgroups.py).

Policy: cgroup v2 counts only where the supervisor's own group offers both the ``pids`` and the ``memory``
controller; a v1 hierarchy counts per controller (``pids``, ``memory``, ``freezer``) mounted with it. A mount
that does not show our own group (another cgroup namespace) is not used. Why a hierarchy is not used is kept
as a note, for the start-up log and ``doctor``. Parsing is pure over the text of ``/proc/self/cgroup`` and
``/proc/self/mountinfo``; only ``detect_layout`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

V1_CONTROLLERS = ("pids", "memory", "freezer")


@dataclass(frozen=True)
class Layout:
    """Where this process's own cgroups are, per usable hierarchy (nothing = no cgroups)."""

    v2: Path | None = None  # own group on a cgroup2 mount that offers pids and memory
    v1: Mapping[str, Path] = field(default_factory=dict)  # controller -> own group dir on its v1 mount
    notes: tuple[str, ...] = ()  # why a hierarchy is not used

    @property
    def usable(self) -> bool:
        return self.v2 is not None or "pids" in self.v1


def parse_layout(proc_self_cgroup: str, mountinfo: str, *, controllers_of: Callable[[Path], set[str] | None]) -> Layout:
    """The own-group directories of this process, from the text of the two /proc files.

    ``controllers_of(dir)`` reads a v2 group's ``cgroup.controllers`` (None if unreadable); injected so
    the choice can be tested on any text.
    """
    own_v1: dict[str, str] = {}
    own_v2: str | None = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            own_v2 = parts[2]
        for name in parts[1].split(","):
            own_v1[name] = parts[2]
    mounts_v1: dict[str, tuple[str, str]] = {}  # controller -> (mount root, mount point)
    mount_v2: tuple[str, str] | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            mount_v2 = (root, point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS:
                    mounts_v1.setdefault(option, (root, point))
    notes: list[str] = []
    v2_dir = _own_dir(mount_v2, own_v2) if mount_v2 is not None and own_v2 is not None else None
    if v2_dir is not None:
        offered = controllers_of(v2_dir) or set()
        missing = {"pids", "memory"} - offered
        if missing:
            notes.append(f"cgroup v2 at {v2_dir} does not offer {' and '.join(sorted(missing))}")
            v2_dir = None
    v1_dirs = {
        name: _own_dir(mounts_v1[name], own_v1[name]) for name in V1_CONTROLLERS if name in mounts_v1 and name in own_v1
    }
    usable_v1 = {name: d for name, d in v1_dirs.items() if d is not None}
    if not usable_v1 and v2_dir is None:
        notes.append("no cgroup v1 pids controller mounted")
    return Layout(v2=v2_dir, v1=usable_v1, notes=tuple(notes))


def _own_dir(mount: tuple[str, str], own: str) -> Path | None:
    """The directory of group ``own`` on a mount of hierarchy root ``mount[0]`` at ``mount[1]``."""
    root, point = mount
    if own != root and not own.startswith(root.rstrip("/") + "/"):
        return None  # our group is outside what this mount shows (another cgroup namespace)
    return Path(point) / own[len(root) :].lstrip("/")


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def detect_layout() -> Layout:
    """This process's layout as the kernel reports it."""
    try:
        own = Path("/proc/self/cgroup").read_text()
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return Layout(notes=(f"cannot read /proc/self: {exc.strerror or exc}",))

    def controllers(directory: Path) -> set[str] | None:
        try:
            return set((directory / "cgroup.controllers").read_text().split())
        except OSError:
            return None

    return parse_layout(own, mounts, controllers_of=controllers)
