"""``doctor``: is this machine and this home set up right for a supervisor that runs for months?

Policy:

- Each check is a pure function of what was measured (versions, limits, file contents, a status reply) and
  returns PASS, WARN or FAIL with a one-line detail and, unless it passed, a one-line fix. The measuring is
  done by ``Probes``, whose fields are plain callables, so a test can hand any check any machine.
- FAIL means the supervisor cannot do its job here (no disk, HOME read-only, a hung supervisor, watches
  exhausted); WARN means it works with less (no cgroups: rlimits and the monitor enforce limits; no uv: pip
  builds the envs; clock state unknown). ``doctor`` exits 1 when any check FAILs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zoneinfo
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

from .envhealth import env_interpreter_problem
from .paths import Paths

MIN_PYTHON = (3, 10)
DISK_FAIL_BYTES = 200 * 1024 * 1024  # below this an env build or the history database soon fails
DISK_WARN_BYTES = 2 * 1024 * 1024 * 1024
_PROBE_ZONE = "Europe/Berlin"  # any zone outside UTC proves the database is there
_MAX_DIRS_COUNTED = 1_000_000


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One line of the report. ``fix`` is empty when the check passed."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


# ---------------------------------------------------------------------------------------------------------
# Pure checks
# ---------------------------------------------------------------------------------------------------------

def check_python(version: Sequence[int], *, executable: str) -> Check:
    text = ".".join(str(part) for part in version[:3])
    if tuple(version[:2]) < MIN_PYTHON:
        return Check("python", Status.FAIL, f"Python {text} at {executable} is too old",
                     f"install Python {'.'.join(map(str, MIN_PYTHON))}+ and recreate the venv with it")
    return Check("python", Status.PASS, f"Python {text} at {executable}")


def check_uv(version: str | None) -> Check:
    if version is None:
        return Check("uv", Status.WARN, "uv not found: envs are built with pip (slower)",
                     "pip install uv into the supervisor's venv (it is a dependency of the package)")
    return Check("uv", Status.PASS, version)


def check_inotify(max_watches: int | None, *, folders: int) -> Check:
    """The watcher watches every folder under Tasks/ (recursively); each folder costs one inotify watch."""
    if max_watches is None:
        return Check("inotify", Status.WARN, "fs.inotify.max_user_watches unknown (not Linux?): changes may be "
                     "noticed by polling only", "")
    fix = (f"sudo sysctl fs.inotify.max_user_watches={max(524288, folders * 4)} (persist it in "
           f"/etc/sysctl.d/60-inotify.conf)")
    detail = f"max_user_watches {max_watches}, {folders} folders under Tasks/"
    if max_watches < folders:
        return Check("inotify", Status.FAIL, f"{detail}: not enough, changes fall back to slow polling", fix)
    if max_watches < folders * 2:  # other programs of the same user (editors, IDEs) need watches too
        return Check("inotify", Status.WARN, f"{detail}: little headroom for other programs", fix)
    return Check("inotify", Status.PASS, detail)


@dataclass(frozen=True)
class CgroupInfo:
    """What the cgroup probe found: the hierarchy and whether memory and pids groups can be created."""

    version: str | None  # "v2", "v1" or None (no cgroup file system)
    memory: bool
    pids: bool
    where: str = ""


def check_cgroups(info: CgroupInfo) -> Check:
    if info.version is not None and info.memory and info.pids:
        return Check("cgroups", Status.PASS, f"cgroup {info.version}: memory and pids usable at {info.where}")
    usable = [name for name, ok in (("memory", info.memory), ("pids", info.pids)) if ok]
    what = f"cgroup {info.version}" if info.version else "no cgroup file system"
    return Check("cgroups", Status.WARN,
                 f"{what}; usable controllers: {', '.join(usable) or 'none'}: limits are enforced by rlimits "
                 f"and the monitor instead (no atomic kill of a forking tree)",
                 "run it as a systemd service with Delegate=yes, or give its user a writable cgroup with the "
                 "memory and pids controllers")


def check_disk(free_bytes: int, *, home: Path) -> Check:
    detail = f"{free_bytes / 2**30:.1f} GiB free on {home}"
    fix = f"free space on the file system of {home} (old envs go with: rm -rf {home / 'envs'} while stopped)"
    if free_bytes < DISK_FAIL_BYTES:
        return Check("disk", Status.FAIL, detail, fix)
    if free_bytes < DISK_WARN_BYTES:
        return Check("disk", Status.WARN, detail, fix)
    return Check("disk", Status.PASS, detail)


def check_home_writable(error: str | None, *, home: Path) -> Check:
    if error is not None:
        return Check("home writable", Status.FAIL, f"cannot write to {home}: {error}",
                     f"make {home} writable for the user that runs the supervisor (chown/chmod)")
    return Check("home writable", Status.PASS, f"{home} is writable")


def check_timezone(error: str | None, *, local_zone: str | None) -> Check:
    if error is not None:
        return Check("time zones", Status.FAIL, f"time zone data missing: {error}",
                     "apt-get install tzdata (or pip install tzdata into the supervisor's venv)")
    return Check("time zones", Status.PASS, f"time zone data present; local zone {local_zone or 'unknown'}")


def check_clock(synchronised: bool | None, *, source: str) -> Check:
    fix = "enable time synchronisation: timedatectl set-ntp true (or install chrony / systemd-timesyncd)"
    if synchronised is None:
        return Check("clock", Status.WARN, f"cannot tell whether the clock is synchronised ({source})", fix)
    if not synchronised:
        return Check("clock", Status.WARN, f"the clock is not synchronised ({source}): schedules drift", fix)
    return Check("clock", Status.PASS, f"the clock is synchronised ({source})")


def check_envs(broken: Sequence[tuple[str, str]], *, total: int, envs_dir: Path) -> Check:
    if broken:
        listed = "; ".join(f"{key}: {reason}" for key, reason in broken)
        return Check("envs", Status.WARN, f"{len(broken)} of {total} env(s) lost their base interpreter: {listed}",
                     f"a running supervisor rebuilds them once by itself; or delete them: "
                     f"rm -rf {' '.join(str(envs_dir / key) for key, _ in broken)}")
    return Check("envs", Status.PASS, f"{total} env(s), every base interpreter present")


@dataclass(frozen=True)
class SupervisorProbe:
    """A running supervisor as seen from outside: lock held?, and its status reply (or why there is none)."""

    running: bool
    status: dict[str, Any] | None = None
    error: str | None = None


def check_supervisor(probe: SupervisorProbe, *, home: Path) -> Check:
    if not probe.running:
        return Check("supervisor", Status.WARN, f"no supervisor is running on {home}",
                     "start it: taskautomation install-systemd --enable (or python3 main.py in tmux)")
    if probe.status is None:
        return Check("supervisor", Status.FAIL,
                     f"a supervisor holds the lock on {home} but does not answer: {probe.error}",
                     "it may be hung: restart it (systemctl restart, or terminate.py and start again)")
    tasks = probe.status.get("tasks", [])
    bad = [t["name"] for t in tasks if t.get("state") in ("error", "env-failed")]
    pid = (probe.status.get("supervisor") or {}).get("pid")
    detail = f"running (pid {pid}), {len(tasks)} task(s)"
    if bad:
        return Check("supervisor", Status.WARN, f"{detail}; not loaded: {', '.join(bad)}",
                     "see taskautomation status (each error names the file, section and key)")
    return Check("supervisor", Status.PASS, detail)


# ---------------------------------------------------------------------------------------------------------
# Measuring (I/O), behind injectable callables
# ---------------------------------------------------------------------------------------------------------

def parse_cgroups(mountinfo: str, proc_cgroup: str, *, read: Callable[[Path], str | None],
                  writable: Callable[[Path], bool]) -> CgroupInfo:
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
        return CgroupInfo("v2", memory=ok and "memory" in controllers, pids=ok and "pids" in controllers,
                          where=str(here))
    return CgroupInfo(None, memory=False, pids=False)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _uv_version() -> str | None:
    from .envs import _find_uv  # noqa: PLC0415 - the very lookup the env builder uses

    uv = _find_uv()
    if uv is None:
        return None
    try:
        result = subprocess.run([str(uv), "--version"], capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL, check=False)
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
    from .envs import MARKER_NAME  # noqa: PLC0415

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


def probe_supervisor(paths: Paths, *, timeout: float = 10.0) -> SupervisorProbe:
    """Lock held? Then ask for status over the control socket; a supervisor that does not answer is hung."""
    from .control import lock_is_held, request  # noqa: PLC0415
    from .errors import TaskAutomationError  # noqa: PLC0415

    if not lock_is_held(paths.lock_file):
        return SupervisorProbe(running=False)
    try:
        reply = request(paths.control_socket, "status", timeout=timeout)
    except (TaskAutomationError, OSError) as exc:
        return SupervisorProbe(running=True, error=str(exc) or type(exc).__name__)
    if not reply.get("ok"):
        return SupervisorProbe(running=True, error=str(reply.get("error")))
    return SupervisorProbe(running=True, status=reply.get("status") or {})


@dataclass(frozen=True)
class Probes:
    """How each measurement is taken; tests replace single fields to simulate a machine."""

    python: Callable[[], tuple[Sequence[int], str]] = lambda: (tuple(sys.version_info[:3]), sys.executable)
    uv_version: Callable[[], str | None] = _uv_version
    max_watches: Callable[[], int | None] = _max_watches
    folders: Callable[[Path], int] = count_folders
    cgroups: Callable[[], CgroupInfo] = field(default=lambda: parse_cgroups(
        _read(Path("/proc/self/mountinfo")) or "", _read(Path("/proc/self/cgroup")) or "", read=_read,
        writable=lambda path: os.access(path, os.W_OK)))
    free_bytes: Callable[[Path], int] = lambda home: shutil.disk_usage(home).free
    home_write_error: Callable[[Path], str | None] = _home_write_error
    timezone_error: Callable[[], str | None] = _timezone_error
    local_zone: Callable[[], str | None] = _local_zone
    clock: Callable[[], tuple[bool | None, str]] = _clock_synchronised
    envs: Callable[[Path], tuple[list[tuple[str, str]], int]] = broken_envs
    supervisor: Callable[[Paths], SupervisorProbe] = probe_supervisor


def run_checks(paths: Paths, *, probes: Probes = Probes()) -> list[Check]:
    """Every check, in report order. A home that does not exist fails the writable check and skips disk."""
    version, executable = probes.python()
    checks = [check_python(version, executable=executable), check_uv(probes.uv_version())]
    checks.append(check_inotify(probes.max_watches(), folders=probes.folders(paths.tasks)))
    checks.append(check_cgroups(probes.cgroups()))
    if paths.home.is_dir():
        checks.append(check_disk(probes.free_bytes(paths.home), home=paths.home))
        checks.append(check_home_writable(probes.home_write_error(paths.home), home=paths.home))
    else:
        checks.append(check_home_writable("it does not exist", home=paths.home))
    checks.append(check_timezone(probes.timezone_error(), local_zone=probes.local_zone()))
    synchronised, source = probes.clock()
    checks.append(check_clock(synchronised, source=source))
    broken, total = probes.envs(paths.envs)
    checks.append(check_envs(broken, total=total, envs_dir=paths.envs))
    checks.append(check_supervisor(probes.supervisor(paths), home=paths.home))
    return checks


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(check.status is Status.FAIL for check in checks) else 0


def render_text(checks: Sequence[Check]) -> list[str]:
    lines = []
    for check in checks:
        lines.append(f"{check.status.value.upper():4}  {check.name}: {check.detail}")
        if check.fix:
            lines.append(f"      fix: {check.fix}")
    return lines


def doctor_command(paths: Paths, *, as_json: bool, out: Callable[[str], None],
                   probes: Probes = Probes()) -> int:
    """``doctor [--json]``: print the report; exit 1 when any check failed."""
    checks = run_checks(paths, probes=probes)
    if as_json:
        out(json.dumps({"checks": [check.to_json() for check in checks]}, indent=2))
    else:
        for line in render_text(checks):
            out(line)
    return exit_code(checks)
