"""``doctor``: is this machine and this home set up right for a supervisor that runs for months?

Policy:

- Each check is a pure function of what was measured (versions, limits, file contents, a status reply) and
  returns PASS, WARN or FAIL with a one-line detail and, unless it passed, a one-line fix. The measuring is
  done by ``Probes`` (doctor_probes.py), whose fields are plain callables, so a test can hand any check any
  machine.
- FAIL means the supervisor cannot do its job here (no disk, HOME read-only, a hung supervisor, watches
  exhausted); WARN means it works with less (no cgroups: rlimits and the monitor enforce limits; no uv: pip
  builds the envs; clock state unknown). ``doctor`` exits 1 when any check FAILs.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

from ..model import ShownState
from ..paths import Paths
from ..system.systemd import unit_setting
from .doctor_probes import CgroupInfo, Probes, SupervisorProbe

MIN_PYTHON = (3, 10)
DISK_FAIL_BYTES = 200 * 1024 * 1024  # below this an env build or the history database soon fails
DISK_WARN_BYTES = 2 * 1024 * 1024 * 1024


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
        return Check(
            "python",
            Status.FAIL,
            f"Python {text} at {executable} is too old",
            f"install Python {'.'.join(map(str, MIN_PYTHON))}+ and recreate the venv with it",
        )
    return Check("python", Status.PASS, f"Python {text} at {executable}")


def check_uv(version: str | None) -> Check:
    if version is None:
        return Check(
            "uv",
            Status.WARN,
            "uv not found: envs are built with pip (slower)",
            "pip install uv into the supervisor's venv (it is a dependency of the package)",
        )
    return Check("uv", Status.PASS, version)


def check_inotify(max_watches: int | None, *, folders: int) -> Check:
    """The watcher watches every folder under Tasks/ (recursively); each folder costs one inotify watch."""
    if max_watches is None:
        return Check(
            "inotify",
            Status.WARN,
            "fs.inotify.max_user_watches unknown (not Linux?): changes may be noticed by polling only",
            "",
        )
    fix = (
        f"sudo sysctl fs.inotify.max_user_watches={max(524288, folders * 4)} (persist it in "
        f"/etc/sysctl.d/60-inotify.conf)"
    )
    detail = f"max_user_watches {max_watches}, {folders} folders under Tasks/"
    if max_watches < folders:
        return Check("inotify", Status.FAIL, f"{detail}: not enough, changes fall back to slow polling", fix)
    if max_watches < folders * 2:  # other programs of the same user (editors, IDEs) need watches too
        return Check("inotify", Status.WARN, f"{detail}: little headroom for other programs", fix)
    return Check("inotify", Status.PASS, detail)


def check_cgroups(info: CgroupInfo) -> Check:
    if info.version is not None and info.memory and info.pids:
        return Check("cgroups", Status.PASS, f"cgroup {info.version}: memory and pids usable at {info.where}")
    usable = [name for name, ok in (("memory", info.memory), ("pids", info.pids)) if ok]
    what = f"cgroup {info.version}" if info.version else "no cgroup file system"
    return Check(
        "cgroups",
        Status.WARN,
        f"{what}; usable controllers: {', '.join(usable) or 'none'}: limits are enforced by rlimits "
        f"and the monitor instead (no atomic kill of a forking tree)",
        "run it as a systemd service with Delegate=yes, or give its user a writable cgroup with the "
        "memory and pids controllers",
    )


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
        return Check(
            "home writable",
            Status.FAIL,
            f"cannot write to {home}: {error}",
            f"make {home} writable for the user that runs the supervisor (chown/chmod)",
        )
    return Check("home writable", Status.PASS, f"{home} is writable")


def check_private(exposed: Sequence[tuple[Path, int]], *, logs: Path) -> Check:
    """logs/ holds every run's messages and output, the history, the control socket and tokens: created
    0700/0600 by the supervisor, but an older home (or a copied one) may have them readable by others."""
    if not exposed:
        return Check("private files", Status.PASS, f"{logs} is private to its owner (folders 0700, files 0600)")
    shown = ", ".join(f"{path} (mode {mode:04o})" for path, mode in exposed[:3])
    more = f" and {len(exposed) - 3} more" if len(exposed) > 3 else ""
    return Check(
        "private files",
        Status.WARN,
        f"readable by group/others (they hold every run's messages and output): {shown}{more}",
        f"chmod -R go= {shlex.quote(str(logs))}",
    )


def check_timezone(error: str | None, *, local_zone: str | None) -> Check:
    if error is not None:
        return Check(
            "time zones",
            Status.FAIL,
            f"time zone data missing: {error}",
            "apt-get install tzdata (or pip install tzdata into the supervisor's venv)",
        )
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
        return Check(
            "envs",
            Status.WARN,
            f"{len(broken)} of {total} env(s) lost their base interpreter: {listed}",
            f"a running supervisor rebuilds them once by itself; or delete them: "
            f"rm -rf {' '.join(str(envs_dir / key) for key, _ in broken)}",
        )
    return Check("envs", Status.PASS, f"{total} env(s), every base interpreter present")


def check_units(units: Sequence[tuple[Path, str]], *, required_stop_s: int, executable: Callable[[str], bool]) -> Check:
    """An installed unit of this home must still start (its interpreter exists) and give the slowest task's
    grace time to stop (TimeoutStopSec)."""
    if not units:
        return Check("systemd unit", Status.PASS, "none installed for this home (started by hand or in tmux)")
    for path, text in units:
        exec_start = unit_setting(text, "ExecStart") or ""
        try:
            words = shlex.split(exec_start.replace("%%", "%").replace("$$", "$"))
        except ValueError:
            words = exec_start.split()
        if not words or not executable(words[0]):
            return Check(
                "systemd unit",
                Status.FAIL,
                f"{path}: ExecStart {words[0] if words else '(none)'} does not exist: the service cannot start",
                "re-run install-systemd with the venv's python",
            )
        try:
            stop_s = float(unit_setting(text, "TimeoutStopSec") or "nan")
        except ValueError:
            stop_s = float("nan")
        if not stop_s >= required_stop_s:  # also true for a missing or unreadable value (NaN)
            return Check(
                "systemd unit",
                Status.WARN,
                f"{path}: TimeoutStopSec {unit_setting(text, 'TimeoutStopSec')} is below the "
                f"{required_stop_s} s the tasks' KillGraceSeconds need: systemd may SIGKILL runs early",
                "re-run install-systemd (after raising a KillGraceSeconds)",
            )
    return Check("systemd unit", Status.PASS, ", ".join(str(path) for path, _ in units))


def check_supervisor(probe: SupervisorProbe, *, home: Path) -> Check:
    if not probe.running:
        return Check(
            "supervisor",
            Status.WARN,
            f"no supervisor is running on {home}",
            "start it: taskautomation install-systemd --enable (or python3 main.py in tmux)",
        )
    if probe.status is None:
        return Check(
            "supervisor",
            Status.FAIL,
            f"a supervisor holds the lock on {home} but does not answer: {probe.error}",
            "it may be hung: restart it (systemctl restart, or terminate.py and start again)",
        )
    tasks = probe.status.get("tasks", [])
    bad = [t["name"] for t in tasks if t.get("state") in (ShownState.ERROR, ShownState.ENV_FAILED)]
    pid = (probe.status.get("supervisor") or {}).get("pid")
    detail = f"running (pid {pid}), {len(tasks)} task(s)"
    if bad:
        return Check(
            "supervisor",
            Status.WARN,
            f"{detail}; not loaded: {', '.join(bad)}",
            "see taskautomation status (each error names the file, section and key)",
        )
    return Check("supervisor", Status.PASS, detail)


def check_launcher(asked: str, line: str) -> Check:
    """[Supervisor] Launcher and the one in force (a fork asked for where it cannot work is a WARN)."""
    detail = line.removeprefix("launcher: ")
    if asked == "fork" and not detail.startswith("fork"):
        return Check("launcher", Status.WARN, detail, "runs are spawned; set Launcher = spawn to say so")
    return Check("launcher", Status.PASS, detail)


def run_checks(paths: Paths, *, probes: Probes = Probes()) -> list[Check]:
    """Every check, in report order. A home that does not exist fails the writable check and skips disk."""
    version, executable = probes.python()
    checks = [check_python(version, executable=executable), check_uv(probes.uv_version())]
    checks.append(check_inotify(probes.max_watches(), folders=probes.folders(paths.tasks)))
    checks.append(check_cgroups(probes.cgroups()))
    checks.append(check_launcher(*probes.launcher(paths)))
    if paths.home.is_dir():
        checks.append(check_disk(probes.free_bytes(paths.home), home=paths.home))
        checks.append(check_home_writable(probes.home_write_error(paths.home), home=paths.home))
        checks.append(check_private(probes.exposed(paths), logs=paths.logs))
    else:
        checks.append(check_home_writable("it does not exist", home=paths.home))
    checks.append(check_timezone(probes.timezone_error(), local_zone=probes.local_zone()))
    synchronised, source = probes.clock()
    checks.append(check_clock(synchronised, source=source))
    broken, total = probes.envs(paths.envs)
    checks.append(check_envs(broken, total=total, envs_dir=paths.envs))
    checks.append(
        check_units(probes.units(paths), required_stop_s=probes.stop_needed(paths), executable=probes.executable)
    )
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


def doctor_command(paths: Paths, *, as_json: bool, out: Callable[[str], None], probes: Probes = Probes()) -> int:
    """``doctor [--json]``: print the report; exit 1 when any check failed."""
    checks = run_checks(paths, probes=probes)
    if as_json:
        out(json.dumps({"checks": [check.to_json() for check in checks]}, indent=2))
    else:
        for line in render_text(checks):
            out(line)
    return exit_code(checks)
