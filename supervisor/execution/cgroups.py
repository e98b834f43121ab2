"""One cgroup per run: the process cap (MaxProcesses), the memory cap (MemoryMB) and an atomic kill.

Policy:
* Detection at start (cgroup_layout.py) picks one hierarchy: cgroup v2 where the supervisor's own group
  offers the ``pids`` and ``memory`` controllers and can hand them to a subgroup; else the cgroup v1 ``pids``
  controller (plus ``memory`` and ``freezer`` when those are mounted too); else none, and a run is capped by
  RLIMIT_NPROC in its task process plus the supervisor's samples (``fallback``). The mechanism for each
  concern is logged at start (``Containment.describe``).
* Groups live below the supervisor's own group, so any cap an administrator (or a test) put around the
  supervisor still holds for its runs: ``OWN/taskautomation-<home hash>/<run id>``. Groups of this home left
  by a crashed supervisor are killed and removed at start; the home's parent group is removed at shutdown.
* The task process enters its groups itself, in the shim, after the fork and before any task code runs:
  nothing the task starts can be outside (see ``_contain.enter_containment``). The run's monitor stays outside,
  so freezing or killing the group never freezes or kills the process that does the killing.
* A run that hits its process cap is killed at once by the supervisor (outcome ``killed``, the message names
  MaxProcesses); a run whose group saw the kernel's OOM killer is a ``memory`` run and is killed whole.
* No cgroup writable: RLIMIT_NPROC = MaxProcesses + the processes and threads the supervisor's user already
  has, set in the task process. The kernel counts every process of that user, and ignores the limit for root:
  root without cgroups has no process cap, which is logged as a warning at start.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import _contain
from ._wire import CONTAIN_VAR, KILL_V1_FREEZER, KILL_V2, ContainmentPlan
from .cgroup_layout import Layout, detect_layout

__all__ = [
    "CONTAIN_VAR",
    "Containment",
    "GroupUsage",
    "RunGroup",
    "containment_plan",
    "user_tasks",
]
PARENT_PREFIX = "taskautomation-"


# --- one run's groups -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunGroup:
    """The directories of one run's groups (one on v2; one per controller on v1)."""

    run_id: str
    version: int  # 1 or 2
    dirs: Mapping[str, Path]  # v2: {"v2": dir}; v1: controller -> dir
    max_processes: int | None
    memory_mb: float | None

    @property
    def pids_dir(self) -> Path:
        return self.dirs["v2"] if self.version == 2 else self.dirs["pids"]

    @property
    def memory_dir(self) -> Path | None:
        if self.memory_mb is None:
            return None
        return self.dirs["v2"] if self.version == 2 else self.dirs.get("memory")

    @property
    def kill(self) -> tuple[str, Path] | None:
        """How a tree in this group is signalled at one instant (None: SIGSTOP passes instead)."""
        if self.version == 2:
            return KILL_V2, self.dirs["v2"]
        return (KILL_V1_FREEZER, self.dirs["freezer"]) if "freezer" in self.dirs else None


@dataclass(frozen=True)
class GroupUsage:
    """What a run's groups say about limits hit so far."""

    fork_failures: int  # forks refused at the pids cap
    oom_kills: int  # processes the kernel's OOM killer ended at the memory cap


def containment_plan(
    *, group: RunGroup | None, nproc: int | None, parents: Iterable[Path] = (), nofile: int | None = None
) -> str:
    """The text the shim reads from CONTAIN_VAR (``_wire.ContainmentPlan``); empty = nothing to contain.

    ``parents`` are the home's parent groups, which a monitor outliving its supervisor removes when empty.
    """
    if group is None:
        return ContainmentPlan(nproc=nproc, nofile=nofile).encode()
    kill = (group.kill[0], str(group.kill[1])) if group.kill is not None else None
    return ContainmentPlan(
        join=tuple(str(d / "cgroup.procs") for d in group.dirs.values()),
        nproc=nproc,
        kill=kill,
        parents=tuple(str(p) for p in parents),
        nofile=nofile,
    ).encode()


class Containment:
    """Creates, watches, kills and removes the cgroups of one home's runs; or plans the rlimit fallback."""

    def __init__(
        self, home: Path, *, layout: Layout | None = None, uid: int | None = None, task_nofile: int | None = None
    ) -> None:
        """``layout`` None = detect; pass ``Layout()`` to run without cgroups (the fallback). ``task_nofile``:
        the soft open-file limit runs get back (the supervisor's before it raised its own), None = inherit."""
        self.task_nofile = task_nofile
        self.layout = detect_layout() if layout is None else layout
        self.uid = os.getuid() if uid is None else uid
        key = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        self.parent_name = PARENT_PREFIX + key
        self.parents: dict[str, Path] = {}  # "v2" or controller -> the home's parent group
        self.problems: list[str] = list(self.layout.notes)

    # ------------------------------------------------------------------ start and stop
    def start(self) -> list[str]:
        """Create the home's parent groups (killing and removing any stale run groups); return log lines."""
        layout = self.layout
        if layout.v2 is not None:
            try:
                self.parents = {"v2": self._prepare_v2(layout.v2)}
            except OSError as exc:
                self.problems.append(f"cgroup v2: {exc.strerror or exc}: {exc.filename}")
        if not self.parents and "pids" in layout.v1:
            try:
                # The freezer first: stale groups die there at one instant, the others are empty by then.
                for name in sorted(layout.v1, key=lambda n: n != "freezer"):
                    self.parents[name] = self._prepare_parent(layout.v1[name], version=1)
            except OSError as exc:
                self.problems.append(f"cgroup v1: {exc.strerror or exc}: {exc.filename}")
                self.close()
                self.parents = {}
        return self.describe()

    def _prepare_v2(self, own: Path) -> Path:
        # Controllers reach a child only through its parent's cgroup.subtree_control; the kernel refuses
        # that (EBUSY) on a non-root group that holds processes ("no internal processes"). A delegated
        # service group (systemd Delegate=yes) holds the supervisor itself, so it first moves into a leaf of
        # its own group; if other processes share the group, the write still fails and v1 (or the fallback)
        # is used.
        try:
            _write(own / "cgroup.subtree_control", "+pids +memory")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            leaf = own / (self.parent_name + "-supervisor")
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _write(own / "cgroup.subtree_control", "+pids +memory")
        parent = self._prepare_parent(own, version=2)
        _write(parent / "cgroup.subtree_control", "+pids +memory")
        return parent

    def _prepare_parent(self, own: Path, *, version: int) -> Path:
        parent = own / self.parent_name
        if parent.is_dir():
            for stale in sorted(p for p in parent.iterdir() if p.is_dir()):
                self._destroy(stale, version=version)
        parent.mkdir(exist_ok=True)
        return parent

    def _restore_parent(self, parent: Path) -> None:
        parent.mkdir(exist_ok=True)
        if self.version == 2:
            _write(parent / "cgroup.subtree_control", "+pids +memory")

    def close(self) -> None:
        """Remove the home's parent groups, whatever happened before.

        Each run's group is removed when the run ends; one that could not be (a killed task not torn down in
        time) is still below its parent here, and would keep the parent too. Every run is over when this is
        called, so such a group is killed and removed first (the freezer hierarchy first, as at start). A
        group that still cannot go (a process stuck in the kernel) keeps its parent; the next start cleans up.
        """
        for name, parent in sorted(self.parents.items(), key=lambda item: item[0] != "freezer"):
            try:
                left = sorted(p for p in parent.iterdir() if p.is_dir())
            except OSError:
                left = []
            for group in left:
                self._destroy(group, version=2 if name == "v2" else 1)
            try:
                parent.rmdir()
            except OSError:
                pass

    @property
    def version(self) -> int | None:
        if not self.parents:
            return None
        return 2 if "v2" in self.parents else 1

    def enforces_memory(self) -> bool:
        return self.version == 2 or "memory" in self.parents

    def describe(self) -> list[str]:
        """The mechanisms in force, one line for each concern; a warning line starts with 'WARNING'."""
        return self._describe(self.parents)

    def _describe(self, parents: Mapping[str, Path]) -> list[str]:
        why = f": {'; '.join(self.problems)}" if self.problems else ""
        if "v2" in parents:
            return ["pids: cgroup v2 pids controller; memory: cgroup v2 memory controller; kill: cgroup v2 cgroup.kill"]
        if parents:
            memory = (
                "cgroup v1 memory controller"
                if "memory" in parents
                else "sampling each run's tree (no cgroup v1 memory controller)"
            )
            kill = (
                "cgroup v1 freezer"
                if "freezer" in parents
                else "SIGSTOP to every process, then the signal (no cgroup v1 freezer)"
            )
            return [f"pids: cgroup v1 pids controller; memory: {memory}; kill: {kill}"]
        lines = [
            f"pids: RLIMIT_NPROC in each run, counting all processes of uid {self.uid}; memory: sampling "
            f"each run's tree; kill: SIGSTOP to every process, then the signal (no cgroup{why})"
        ]
        if self.uid == 0:
            lines.append(
                "WARNING: running as root without a writable cgroup: the kernel ignores RLIMIT_NPROC "
                "for root, so MaxProcesses is only checked when the supervisor samples a run"
            )
        return lines

    # ------------------------------------------------------------------ runs
    def create(self, run_id: str, *, max_processes: int | None, memory_mb: float | None) -> RunGroup | None:
        """Make the run's groups with their limits; None without cgroups. OSError if the kernel refuses."""
        if not self.parents:
            return None
        if self.version == 2:
            dirs = {"v2": self.parents["v2"] / run_id}
        else:
            dirs = {
                name: parent / run_id
                for name, parent in self.parents.items()
                if name != "memory" or memory_mb is not None
            }
        group = RunGroup(
            run_id=run_id,
            version=self.version or 1,
            dirs=dirs,
            max_processes=max_processes,
            memory_mb=memory_mb if self.enforces_memory() else None,
        )
        try:
            for directory in dirs.values():
                try:
                    directory.mkdir()
                except FileNotFoundError:
                    # The last monitor of a supervisor that died removed the home's parent (see
                    # _contain.remove_groups) after this supervisor started: make it again.
                    self._restore_parent(directory.parent)
                    directory.mkdir()
            if max_processes is not None:
                _write(group.pids_dir / "pids.max", str(max_processes))
            memory = group.memory_dir
            if memory is not None and memory_mb is not None:
                limit = str(int(memory_mb * 1048576))
                if group.version == 2:
                    _write(memory / "memory.max", limit)
                    _write(memory / "memory.swap.max", "0", optional=True)
                else:
                    _write(memory / "memory.limit_in_bytes", limit)
                    # With swap accounting the limit on memory+swap keeps a leak from spilling into swap.
                    _write(memory / "memory.memsw.limit_in_bytes", limit, optional=True)
        except OSError:
            self.remove(group)
            raise
        return group

    def usage(self, group: RunGroup) -> GroupUsage:
        """Counters of the run's groups (zeros for files that are gone)."""
        pids = _read_keyed(group.pids_dir / "pids.events")
        memory_dir = group.memory_dir
        oom = 0
        if memory_dir is not None:
            events = "memory.events" if group.version == 2 else "memory.oom_control"
            oom = _read_keyed(memory_dir / events).get("oom_kill", 0)
        return GroupUsage(fork_failures=pids.get("max", 0), oom_kills=oom)

    def kill(self, group: RunGroup) -> int:
        """SIGKILL everything in the run's groups at one instant; returns how many processes were hit."""
        kill = group.kill
        if kill is not None:
            return len(_contain.signal_group(kill[0], str(kill[1]), signal.SIGKILL))
        hit = 0
        for _ in range(200):  # no freezer: stop them all, then kill (as _shim.signal_stopped_tree does for a tree)
            pids = _contain.group_pids(str(group.pids_dir))
            if not pids:
                break
            _contain.signal_all(pids, signal.SIGSTOP)
            hit += len(_contain.signal_all(pids, signal.SIGKILL))
        return hit

    def remove(self, group: RunGroup, *, timeout_s: float = 2.0) -> bool:
        """Remove the run's groups, killing what is left in them first; False if one could not go."""
        ok = True
        for directory in group.dirs.values():
            ok = self._destroy(directory, version=group.version, timeout_s=timeout_s) and ok
        return ok

    def _destroy(self, directory: Path, *, version: int, timeout_s: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                directory.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
            # Processes are still inside (or a killed one is not reaped yet): kill them, then try again.
            kind = (
                KILL_V2
                if version == 2
                else KILL_V1_FREEZER
                if directory.parent.parent == self.layout.v1.get("freezer")
                else None
            )
            if kind is not None:
                _contain.signal_group(kind, str(directory), signal.SIGKILL)
            else:
                _contain.signal_all(_contain.group_pids(str(directory)), signal.SIGKILL)
            time.sleep(0.01)

    # ------------------------------------------------------------------ the fallback
    def nproc_limit(
        self, max_processes: int | None, *, group: RunGroup | None, count_tasks: Callable[[int], int] | None = None
    ) -> int | None:
        """RLIMIT_NPROC for a run without a pids group: what the user has now plus MaxProcesses (None: no cap).

        Not for root, whom the kernel exempts: counting its processes would cost a pass over /proc for nothing.
        """
        if max_processes is None or group is not None or self.uid == 0:
            return None
        return (count_tasks or user_tasks)(self.uid) + max_processes


def user_tasks(uid: int) -> int:
    """Processes + threads whose owner is ``uid`` (what the kernel counts against RLIMIT_NPROC)."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        total += int(stat[stat.rfind(b")") + 2 :].split()[17])  # num_threads, field 20
    return total


def _write(path: Path, text: str, *, optional: bool = False) -> None:
    """Write a cgroup control file; ``optional`` files may be missing or refused (e.g. no swap accounting)."""
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        if not optional:
            raise


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) as a dict; {} if unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values
