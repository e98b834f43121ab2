"""What ``doctor`` measures on this machine, behind plain callables (``Probes``) that tests replace.

Each probe reads one thing (a /proc file, a syscall, a subprocess, the control socket) and returns plain data
for the pure checks in doctor.py. None raises for a machine that lacks what it looks at: "unknown" or
"missing" is an answer for the check to judge.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config.schema import read_home_config
from ..envs.health import env_interpreter_problem
from ..errors import TaskAutomationError
from ..execution.forkserver import launcher_line
from ..model import Limits
from ..paths import Paths
from ..system.systemd import home_kill_graces, installed_units, stop_timeout_for

_PROBE_ZONE = "Europe/Berlin"  # any zone outside UTC proves the database is there
_MAX_DIRS_COUNTED = 1_000_000


@dataclass(frozen=True)
class CgroupInfo:
    """What the cgroup probe found: the hierarchy and whether memory and pids groups can be created."""

    version: str | None  # "v2", "v1" or None (no cgroup file system)
    memory: bool
    pids: bool
    where: str = ""


@dataclass(frozen=True)
class SupervisorProbe:
    """A running supervisor as seen from outside: lock held?, and its status reply (or why there is none)."""

    running: bool
    status: dict[str, Any] | None = None
    error: str | None = None


def parse_cgroups(
    mountinfo: str, proc_cgroup: str, *, read: Callable[[Path], str | None], writable: Callable[[Path], bool]
) -> CgroupInfo:
    """Find this process's cgroup(s) and whether memory and pids sub-groups can be made there.

    v2 (a ``cgroup2`` mount): our group must be writable and offer both controllers in cgroup.controllers.
    v1: the ``memory`` and ``pids`` hierarchies are separate mounts; each must be writable at our group.
    """
    v2_mount: Path | None = None
    v1_mounts: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mountpoint = Path(fields[4].replace("\\040", " "))
        if tail[0] == "cgroup2":
            v2_mount = v2_mount or mountpoint
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in ("memory", "pids"):
                    v1_mounts.setdefault(option, mountpoint)
    groups: dict[str, str] = {}  # controller ("" for v2) -> path of our group
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                groups[controller] = parts[2]
    if v1_mounts:
        found = {}
        for controller in ("memory", "pids"):
            mount = v1_mounts.get(controller)
            if mount is None:
                found[controller] = False
                continue
            here = mount / groups.get(controller, "/").lstrip("/")
            found[controller] = writable(here if here.is_dir() else mount)
        where = ", ".join(str(m) for m in v1_mounts.values())
        return CgroupInfo("v1", memory=found["memory"], pids=found["pids"], where=where)
    if v2_mount is not None:
        here = v2_mount / groups.get("", "/").lstrip("/")
        controllers = (read(here / "cgroup.controllers") or "").split()
        ok = writable(here)
        return CgroupInfo(
            "v2", memory=ok and "memory" in controllers, pids=ok and "pids" in controllers, where=str(here)
        )
    return CgroupInfo(None, memory=False, pids=False)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _uv_version() -> str | None:
    from ..envs.installer import find_uv  # noqa: PLC0415 - the very lookup the env builder uses

    uv = find_uv()
    if uv is None:
        return None
    try:
        result = subprocess.run(
            [str(uv), "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"{result.stdout.strip() or 'uv'} at {uv}" if result.returncode == 0 else None


def _max_watches() -> int | None:
    text = _read(Path("/proc/sys/fs/inotify/max_user_watches"))
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def count_folders(tasks_dir: Path) -> int:
    """Folders the recursive watch needs (Tasks/ itself and everything below, symlinks not followed)."""
    count = 0
    for _root, _dirs, _files in os.walk(tasks_dir):
        count += 1
        if count >= _MAX_DIRS_COUNTED:
            break
    return count


def _home_write_error(home: Path) -> str | None:
    try:
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _timezone_error() -> str | None:
    try:
        zoneinfo.ZoneInfo(_PROBE_ZONE)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        return f"{_PROBE_ZONE}: {exc}"
    return None


def _local_zone() -> str | None:
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = os.readlink(localtime)
        return target.split("zoneinfo/", 1)[-1]
    text = _read(Path("/etc/timezone"))
    return text.strip() if text else None


_STA_UNSYNC = 0x0040  # struct timex.status bit: the kernel clock is not synchronised
_TIME_ERROR = 5  # adjtimex() return value: clock not synchronised


def _clock_synchronised() -> tuple[bool | None, str]:
    """Ask the kernel (adjtimex with no modes is read-only and unprivileged); timedatectl needs D-Bus."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None, "no libc to ask"
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # larger than struct timex; modes (offset 0) = 0: read only
        state = libc.adjtimex(buffer)
    except (OSError, AttributeError) as exc:
        return None, f"adjtimex unavailable: {exc}"
    if state < 0:
        return None, f"adjtimex failed: {os.strerror(ctypes.get_errno())}"
    return state != _TIME_ERROR, "kernel adjtimex"


def broken_envs(envs_dir: Path) -> tuple[list[tuple[str, str]], int]:
    """(key, reason) of every built env whose interpreter no longer resolves, and the number of envs."""
    from ..envs.manager import MARKER_NAME  # noqa: PLC0415

    if not envs_dir.is_dir():
        return [], 0
    broken, total = [], 0
    for folder in sorted(envs_dir.iterdir()):
        if folder.is_symlink() or not (folder / MARKER_NAME).is_file():
            continue  # only completed builds: a build in progress has no interpreter yet
        total += 1
        problem = env_interpreter_problem(folder)
        if problem is not None:
            broken.append((folder.name, problem))
    return broken, total


def exposed_paths(paths: Paths, *, limit: int = 1000) -> list[tuple[Path, int]]:
    """(path, permission bits) of every folder and file under the home's private places (logs/: the
    history, the logs, the control socket, tokens) that its group or others may access, at most ``limit``.

    Symlinks are not followed (their own mode means nothing); a path that vanishes meanwhile is skipped.
    """
    found: list[tuple[Path, int]] = []
    for place in paths.private_places():
        for root, folders, files in os.walk(place, onerror=lambda _exc: None):
            for name in [".", *folders, *files]:
                path = Path(root) if name == "." else Path(root) / name
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o077:
                    found.append((path, stat.S_IMODE(info.st_mode)))
                    if len(found) >= limit:
                        return found
    return found


def _stop_needed(paths: Paths) -> int:
    """The TimeoutStopSec this home's tasks need (an unreadable home config counts with the default grace)."""
    from ..errors import TaskAutomationError  # noqa: PLC0415

    try:
        graces = home_kill_graces(paths)
    except TaskAutomationError:
        graces = []
    return stop_timeout_for(graces, default_grace_s=Limits().kill_grace_s)


def probe_supervisor(paths: Paths, *, timeout: float = 10.0) -> SupervisorProbe:
    """Lock held? Then ask for status over the control socket; a supervisor that does not answer is hung."""
    from ..errors import TaskAutomationError  # noqa: PLC0415
    from ..system.control import lock_is_held, request  # noqa: PLC0415

    if not lock_is_held(paths.lock_file):
        return SupervisorProbe(running=False)
    try:
        reply = request(paths.control_socket, "status", timeout=timeout)
    except (TaskAutomationError, OSError) as exc:
        return SupervisorProbe(running=True, error=str(exc) or type(exc).__name__)
    if not reply.get("ok"):
        return SupervisorProbe(running=True, error=str(reply.get("error")))
    return SupervisorProbe(running=True, status=reply.get("status") or {})


def _launcher(paths: Paths) -> tuple[str, str]:
    """([Supervisor] Launcher as configured, the line saying which launcher is in force)."""
    try:
        asked = read_home_config(paths.home_config)[0].launcher
    except TaskAutomationError:
        asked = "spawn"  # a broken taskautomation.ini is the supervisor check's to report
    return asked, launcher_line(asked)


@dataclass(frozen=True)
class Probes:
    """How each measurement is taken; tests replace single fields to simulate a machine."""

    python: Callable[[], tuple[Sequence[int], str]] = lambda: (tuple(sys.version_info[:3]), sys.executable)
    uv_version: Callable[[], str | None] = _uv_version
    max_watches: Callable[[], int | None] = _max_watches
    folders: Callable[[Path], int] = count_folders
    cgroups: Callable[[], CgroupInfo] = field(
        default=lambda: parse_cgroups(
            _read(Path("/proc/self/mountinfo")) or "",
            _read(Path("/proc/self/cgroup")) or "",
            read=_read,
            writable=lambda path: os.access(path, os.W_OK),
        )
    )
    free_bytes: Callable[[Path], int] = lambda home: shutil.disk_usage(home).free
    home_write_error: Callable[[Path], str | None] = _home_write_error
    timezone_error: Callable[[], str | None] = _timezone_error
    local_zone: Callable[[], str | None] = _local_zone
    clock: Callable[[], tuple[bool | None, str]] = _clock_synchronised
    envs: Callable[[Path], tuple[list[tuple[str, str]], int]] = broken_envs
    units: Callable[[Paths], list[tuple[Path, str]]] = lambda paths: installed_units(
        paths, environ=os.environ, user_home=Path.home()
    )
    stop_needed: Callable[[Paths], int] = lambda paths: _stop_needed(paths)
    executable: Callable[[str], bool] = lambda path: os.access(path, os.X_OK)
    supervisor: Callable[[Paths], SupervisorProbe] = probe_supervisor
    exposed: Callable[[Paths], list[tuple[Path, int]]] = exposed_paths
    launcher: Callable[[Paths], tuple[str, str]] = lambda paths: _launcher(paths)
