"""Stdlib-only containment of one run in its cgroups, shared by the in-env shim and the supervisor.

The task process enters the run's groups (and takes its RLIMIT_NPROC) before any task code runs, so nothing
it starts can be outside (``enter_containment``). A tree that forks faster than it can be listed (a fork bomb)
never runs out of new pids for a kill loop, so a cgroup's processes are signalled while none of them can run
(``signal_group``: cgroup.kill, or the group frozen first). A monitor that outlives its supervisor removes
the run's groups (``remove_groups``). The supervisor (execution/cgroups.py) uses the same functions for its
own last-resort kill.

Like _shim.py and _wire.py this runs in the task's interpreter: no third-party imports, and nothing heavy at
module level (it is loaded before the fork that starts ``main()``).
"""

from __future__ import annotations  # annotations are never evaluated: no typing import, no cost

import os

TYPE_CHECKING = False  # typing itself costs an import before main(); only the type checker reads these
if TYPE_CHECKING:
    from typing import Callable, Iterable

    from ._wire import ContainmentPlan

try:  # imported as part of the package (by execution/cgroups.py and runner.py, and the shim's package import)
    from ._wire import KILL_V2
except ImportError:  # loaded by the shim run by path: its folder is sys.path[0]
    from _wire import KILL_V2  # type: ignore[no-redef]

SIGKILL = 9


def enter_containment(plan: ContainmentPlan, pid: int) -> None:
    """Move ``pid`` into the run's cgroups and cap its user's processes; OSError when the kernel refuses.

    Called in the task process before any task code: a process cannot fork before it is inside.
    """
    data = str(pid).encode()
    for path in plan.join:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    if plan.nofile is not None:
        # The supervisor raised its own soft limit for its pipes and sockets; a task gets the machine's usual
        # soft limit back (programs that use select() break on descriptors past 1024) and may raise it itself.
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (plan.nofile if hard == resource.RLIM_INFINITY else min(plan.nofile, hard), hard)
        )
    if plan.nproc is not None:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        cap = plan.nproc if hard == resource.RLIM_INFINITY else min(plan.nproc, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))  # hard too: the task cannot raise it again


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("ascii", "replace")


def group_pids(directory: str) -> list[int]:
    """The pids (thread group leaders) in a cgroup's cgroup.procs; [] once the group is gone."""
    try:
        return [int(p) for p in _read(directory + "/cgroup.procs").split()]
    except OSError:
        return []


def _wait_frozen(directory: str, is_frozen: Callable[[str], bool], timeout_s: float = 1.0) -> bool:
    """Poll until the group reports frozen. A task in uninterruptible sleep can delay that; after the timeout
    the caller signals anyway (SIGKILL still lands once the task leaves the kernel, and the caller repeats)."""
    import time

    deadline = time.monotonic() + timeout_s
    delay = 0.0005
    while not is_frozen(directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


def _v2_frozen(directory: str) -> bool:
    try:
        return "frozen 1" in _read(directory + "/cgroup.events")
    except OSError:
        return True  # gone: nothing left to freeze


def _v1_frozen(directory: str) -> bool:
    try:
        return _read(directory + "/freezer.state").strip() == "FROZEN"
    except OSError:
        return True


def signal_all(pids: Iterable[int], sig: int) -> list[int]:
    hit = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            hit.append(pid)
        except OSError:
            pass
    return hit


def signal_group(kind: str, directory: str, sig: int) -> list[int]:
    """Signal every process of a cgroup while none of them can run; returns the pids signalled.

    v2 SIGKILL is the kernel's own ``cgroup.kill``. Otherwise the group is frozen (v2 ``cgroup.freeze``, v1
    freezer ``freezer.state``), signalled from its ``cgroup.procs`` and thawed: a frozen process cannot fork,
    and a signal sent while frozen is acted on before it returns to user space (a v1-frozen process even
    needs the thaw to die of SIGKILL).
    """
    if kind == KILL_V2 and sig == SIGKILL:
        pids = group_pids(directory)
        try:
            _write(directory + "/cgroup.kill", "1")
            return pids
        except OSError:
            pass  # a kernel before 5.14 has no cgroup.kill: freeze instead
    if kind == KILL_V2:
        freeze, thaw, frozen = (directory + "/cgroup.freeze", "1"), (directory + "/cgroup.freeze", "0"), _v2_frozen
    else:
        freeze, thaw = (directory + "/freezer.state", "FROZEN"), (directory + "/freezer.state", "THAWED")
        frozen = _v1_frozen
    try:
        _write(*freeze)
    except OSError:
        return signal_all(group_pids(directory), sig)  # gone, or no freezer after all: best effort
    try:
        _wait_frozen(directory, frozen)
        return signal_all(group_pids(directory), sig)
    finally:
        try:
            _write(*thaw)
        except OSError:
            pass


def remove_groups(groups: Iterable[str], parents: Iterable[str]) -> None:
    """Remove the run's (empty) groups, then the home's parent groups if they are empty too: the supervisor
    that would have done it is gone, and nobody may ever start one on that home again. A run group that is
    not empty yet (a killed task not torn down) is retried briefly; a parent still in use (other runs) stays,
    and the last monitor or the next start removes it."""
    import time

    for directory in groups:
        for _ in range(50):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
    for directory in parents:
        try:
            os.rmdir(directory)
        except OSError:
            pass


# --- the process tree below a pid, read from /proc (the shim's monitor and the runner's tree measure) ------


def descendants(root: int) -> list[int]:
    """PIDs of every live (non-zombie) descendant of ``root`` (no psutil in the task env).

    Walks the tree down from ``root`` through the kernel's per-thread ``children`` lists: the cost grows
    with the tree, not with every process on the machine (a stop on a busy host spent over a millisecond in
    the full /proc pass, several times the ``killpg`` floor). Kernels without those files get the full pass.
    Either way a process forked during the walk can be missed; callers look again before they give up.
    """
    try:
        return _descendants_walk(root)
    except OSError:
        return _descendants_scan(root)


def _descendants_walk(root: int) -> list[int]:
    """The tree below ``root`` from /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN); OSError without it."""
    os.stat("/proc/%d/task/%d/children" % (root, root))  # raises where the kernel lacks the files
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            threads = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue  # gone meanwhile: its children were re-parented to us and show up on a later look
        for tid in threads:
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid), "rb") as f:
                    kids = f.read().split()
            except OSError:
                continue
            for kid in map(int, kids):
                try:
                    with open("/proc/%d/stat" % kid, "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                if stat[stat.rfind(b")") + 2 :][:1] == b"Z":
                    continue  # a zombie is already dead (and has no children left)
                found.append(kid)
                stack.append(kid)
    return found


def _descendants_scan(root: int) -> list[int]:
    """PIDs of every live descendant of ``root``, from one pass over all of /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/" + name + "/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the fields after the last ')' are unambiguous.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] == b"Z":
            continue  # a zombie is already dead; reaping it is all that is left
        children.setdefault(int(fields[1]), []).append(int(name))
    found, stack = [], [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            found.append(pid)
            stack.append(pid)
    return found
