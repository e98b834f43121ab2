"""A systemd unit for one home: rendering (pure) and installing (``install-systemd``).

Policy:

- ``Type=notify``: systemd considers the supervisor started when it sends ``READY=1`` (after its first scan of
  ``Tasks/``), and ``WatchdogSec=30`` restarts it when its loop thread stops pinging (a hung loop).
  ``NotifyAccess=main``: only the supervisor itself may notify, never a task that inherited the socket.
- ``KillMode=mixed``: ``systemctl stop`` sends SIGTERM to the supervisor alone, which stops every run's tree
  with that task's own KillGraceSeconds; only what is still left after ``TimeoutStopSec`` gets SIGKILL. So
  ``TimeoutStopSec`` is the largest grace of the home's tasks plus a margin for the supervisor's own shutdown.
- ``Restart=on-failure``: a crash or a watchdog kill restarts it; a clean stop (exit 0) does not.
- A user manager has no ``network-online.target`` (ordering on it silently does nothing), so only the system
  unit orders itself after the network.
- Everything is absolute: this interpreter (the venv that has the dependencies), ``main.py`` and ``--home``.
  From a clone the unit runs the clone's ``main.py``; from an installed tool (pipx, ``uv tool``, a wheel) the
  tool's own interpreter runs ``-m supervisor run``: both work for as long as that install does.
"""

from __future__ import annotations

import math
import os
import pwd
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from ..config.schema import read_home_config, read_task_config
from ..errors import TaskAutomationError
from ..paths import CONFIG_FILE, Paths

UNIT_PREFIX = "taskautomation-"
WATCHDOG_SEC = 30
STOP_MARGIN_S = 30  # the supervisor's own shutdown after the slowest run's grace
RESTART_SEC = 5
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

_UNIT_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class UnitSpec:
    """Everything the unit text depends on; no I/O behind any field."""

    name: str  # the unit's name without ".service"
    home: Path
    python: Path
    main_py: Path | None  # None: the package is installed without main.py; run ``-m supervisor run``
    user_mode: bool
    stop_timeout_s: int
    run_as: str | None = None  # system mode: User= (None: the unit runs as root)


def unit_name_for(home: Path) -> str:
    """``taskautomation-<home folder name>``, reduced to the characters a unit name may hold."""
    stem = _UNIT_NAME_SAFE.sub("-", home.name).strip("-.") or "home"
    return f"{UNIT_PREFIX}{stem}"


def stop_timeout_for(kill_graces_s: Iterable[float], *, default_grace_s: float) -> int:
    """TimeoutStopSec: the largest KillGraceSeconds (``default_grace_s`` when there are no tasks) + margin."""
    largest = max([default_grace_s, *kill_graces_s])
    return int(math.ceil(largest)) + STOP_MARGIN_S


def escape_literal(value: str) -> str:
    """Escape systemd's specifier (``%``) and variable (``$``) characters in a literal."""
    return value.replace("%", "%%").replace("$", "$$")


def exec_quote(arg: str) -> str:
    """One ExecStart word: double-quoted (with C-style escapes) when it holds spaces or quotes."""
    escaped = escape_literal(arg)
    if escaped and not re.search(r"[\s\"'\\;]", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec: UnitSpec) -> str:
    """The unit file's text for ``spec``."""
    program = [str(spec.main_py)] if spec.main_py is not None else ["-m", "supervisor", "run"]
    exec_start = " ".join(exec_quote(part) for part in (str(spec.python), *program, "--home", str(spec.home)))
    unit = [
        "[Unit]",
        f"Description=Task Automation supervisor for {escape_literal(str(spec.home))}",
    ]
    if spec.main_py is not None and (spec.main_py.parent / "docs" / "running.md").is_file():
        unit.append(f"Documentation={escape_literal((spec.main_py.parent / 'docs' / 'running.md').as_uri())}")
    if not spec.user_mode:
        # Tasks often need the network at their first run; only the system manager has this target.
        unit += ["Wants=network-online.target", "After=network-online.target"]
    service = [
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={escape_literal(str(spec.home))}",
    ]
    if spec.run_as is not None and not spec.user_mode:
        service.append(f"User={spec.run_as}")
    service += [
        "Environment=PYTHONUNBUFFERED=1",
        "# SIGTERM to the supervisor only: it stops each run's tree with that task's KillGraceSeconds.",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        "# Largest KillGraceSeconds of the home's tasks + 30 s; re-run install-systemd after raising a grace.",
        f"TimeoutStopSec={spec.stop_timeout_s}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "# The loop thread pings every 15 s; a loop that hangs is restarted.",
        f"WatchdogSec={WATCHDOG_SEC}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if spec.user_mode else 'multi-user.target'}",
    ]
    return "\n".join(unit + service) + "\n"


def unit_dir(*, user_mode: bool, environ: Mapping[str, str], user_home: Path) -> Path:
    """Where the unit goes: ``/etc/systemd/system`` or ``$XDG_CONFIG_HOME/systemd/user`` (~/.config)."""
    if not user_mode:
        return SYSTEM_UNIT_DIR
    config = environ.get("XDG_CONFIG_HOME") or str(user_home / ".config")
    return Path(config) / "systemd" / "user"


def owner_of(path: Path) -> str | None:
    """The user name owning ``path``; None for root (a system unit then runs as root) or an unknown uid."""
    uid = path.stat().st_uid
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def linger_hint(user: str) -> str:
    """The line that keeps a user manager (and so the unit) alive without a login session."""
    return (
        f"hint: user services stop when {user} logs out and do not start at boot unless lingering is on: "
        f"sudo loginctl enable-linger {user}"
    )


CommandRunner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a systemctl command to completion with its output captured."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False
    )


def enable_commands(name: str, *, user_mode: bool) -> list[list[str]]:
    """``systemctl [--user] daemon-reload`` then ``enable --now`` of the unit."""
    base = ["systemctl", "--user"] if user_mode else ["systemctl"]
    return [[*base, "daemon-reload"], [*base, "enable", "--now", f"{name}.service"]]


def enable_unit(name: str, *, user_mode: bool, run: CommandRunner = run_command) -> list[str]:
    """Reload the manager and enable + start the unit; one report line per command. Raises on failure."""
    done: list[str] = []
    for argv in enable_commands(name, user_mode=user_mode):
        try:
            result = run(argv)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TaskAutomationError(f"{' '.join(argv)}: {exc}") from exc
        if result.returncode != 0:
            reason = (result.stderr or result.stdout).strip().splitlines()
            raise TaskAutomationError(
                f"{' '.join(argv)} failed (exit {result.returncode}): {reason[-1] if reason else 'no output'}"
            )
        done.append(f"ran: {' '.join(argv)}")
    return done


def write_unit(path: Path, text: str) -> None:
    """Write the unit file atomically (a half-written unit must never be loaded)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(text, encoding="utf-8")
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except PermissionError as exc:
        raise TaskAutomationError(
            f"cannot write {path}: permission denied; run it as root (sudo) or install a user unit with --user"
        ) from exc


@dataclass(frozen=True)
class UnitPlan:
    """The unit's text and the file it belongs in."""

    unit_path: Path
    text: str


def task_kill_graces(tasks_dir: Path, *, read_grace: Callable[[Path], float | None]) -> list[float]:
    """KillGraceSeconds of every task folder that has a readable config.ini (``read_grace`` returns None
    for one that does not parse: the default grace covers it)."""
    if not tasks_dir.is_dir():
        return []
    graces = []
    for folder in sorted(tasks_dir.iterdir()):
        if folder.is_dir() and (folder / CONFIG_FILE).is_file():
            grace = read_grace(folder / CONFIG_FILE)
            if grace is not None:
                graces.append(grace)
    return graces


def home_kill_graces(paths: Paths) -> list[float]:
    """KillGraceSeconds of the home's default and of every task whose config.ini reads (the others get the
    default when they are fixed)."""
    home_config, _ = read_home_config(paths.home_config)

    def read_grace(config_ini: Path) -> float | None:
        try:
            spec = read_task_config(config_ini, task=config_ini.parent.name, defaults=home_config.limits).spec
        except TaskAutomationError:
            return None
        return spec.limits.kill_grace_s

    return [home_config.limits.kill_grace_s, *task_kill_graces(paths.tasks, read_grace=read_grace)]


def installed_units(paths: Paths, *, environ: Mapping[str, str], user_home: Path) -> list[tuple[Path, str]]:
    """(path, text) of this home's unit in the system and the user unit folders, where one is installed."""
    found = []
    name = f"{unit_name_for(paths.home)}.service"
    for user_mode in (False, True):
        path = unit_dir(user_mode=user_mode, environ=environ, user_home=user_home) / name
        try:
            found.append((path, path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    return found


def unit_setting(text: str, key: str) -> str | None:
    """The last ``key=value`` of a unit's text (later assignments win for these single-valued keys)."""
    value = None
    for line in text.splitlines():
        name, sep, rest = line.strip().partition("=")
        if sep and name.strip() == key:
            value = rest.strip()
    return value


def plan_install(
    *,
    home: Path,
    python: Path,
    main_py: Path | None,
    user_mode: bool,
    graces: Iterable[float],
    default_grace_s: float,
    run_as: str | None,
    target_dir: Path,
    name: str | None = None,
) -> UnitPlan:
    """The unit and where it goes, without touching anything (``--dry-run`` prints exactly this)."""
    unit_name = name or unit_name_for(home)
    spec = UnitSpec(
        name=unit_name,
        home=home,
        python=python,
        main_py=main_py,
        user_mode=user_mode,
        stop_timeout_s=stop_timeout_for(graces, default_grace_s=default_grace_s),
        run_as=None if user_mode else run_as,
    )
    return UnitPlan(unit_path=target_dir / f"{unit_name}.service", text=render_unit(spec))


def clone_main_py(module: Path) -> Path | None:
    """The clone's ``main.py`` when this package runs from a clone (main.py and terminate.py beside the
    package folder), None for an installed package: a ``main.py`` some other distribution put in
    site-packages must not become the unit's program."""
    root = module.resolve().parents[2]
    return root / "main.py" if (root / "main.py").is_file() and (root / "terminate.py").is_file() else None


@dataclass(frozen=True)
class InstallOptions:
    """What every ``install-systemd`` takes: where the unit goes and what is done with it."""

    user_mode: bool
    dry_run: bool
    enable: bool
    target_dir: Path | None  # None: the system or user unit folder

    def unit_folder(self, environ: Mapping[str, str]) -> Path:
        return self.target_dir or unit_dir(user_mode=self.user_mode, environ=environ, user_home=Path.home())


def install_command(
    paths: Paths,
    options: InstallOptions,
    *,
    environ: Mapping[str, str],
    out: Callable[[str], None],
    run: CommandRunner = run_command,
) -> int:
    """``install-systemd``: render the unit for this home and this interpreter; print, write or also enable it."""
    user_mode = options.user_mode
    # The interpreter running this command is the one that has the dependencies: the unit must use it.
    plan = plan_install(
        home=paths.home,
        python=Path(os.path.abspath(sys.executable)),
        main_py=clone_main_py(Path(__file__)),
        user_mode=user_mode,
        graces=home_kill_graces(paths),
        default_grace_s=0.0,
        run_as=owner_of(paths.home),
        target_dir=options.unit_folder(environ),
    )
    return finish_install(plan, options, out=out, run=run)


def finish_install(
    plan: UnitPlan, options: InstallOptions, *, out: Callable[[str], None], run: CommandRunner = run_command
) -> int:
    """Print (``--dry-run``) or write the unit, then enable it or say how; the linger hint for a user unit."""
    user_mode, dry_run, enable = options.user_mode, options.dry_run, options.enable
    if dry_run:
        out(f"# {plan.unit_path} (not written: --dry-run{'; --enable ignored' if enable else ''})")
        out(plan.text.rstrip("\n"))
    else:
        write_unit(plan.unit_path, plan.text)
        out(f"wrote {plan.unit_path}")
    name = plan.unit_path.name[: -len(".service")]
    if enable and not dry_run:
        for line in enable_unit(name, user_mode=user_mode, run=run):
            out(line)
        journal = f"journalctl {'--user ' if user_mode else ''}-u {name} -f"
        out(f"{name} is enabled and started; follow it with: {journal}")
    elif not dry_run:
        flag = "--user " if user_mode else ""
        out(f"next: systemctl {flag}daemon-reload && systemctl {flag}enable --now {name} (or re-run with --enable)")
    if user_mode:
        out(linger_hint(pwd.getpwuid(os.getuid()).pw_name))
    return 0
