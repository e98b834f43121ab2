"""A systemd unit for an RQ worker's home (``install-systemd --worker``): rendering (pure) and installing.

Policy:

- ``Restart=always`` with ``RestartSec=10`` and no start limit (``StartLimitIntervalSec=0``): a worker survives
  Redis outages by itself; one that dies anyway (killed, out of memory, a bug) is started again 10 s later,
  however often that happens, and a worker stopped by anything but systemd is started again too.
- The Redis URL (with its password) is never in the unit, which every user may read (``systemctl show``
  prints its ``Environment=`` lines): it goes into ``HOME/worker.env`` (mode 0600), read by systemd as an
  ``EnvironmentFile=``; the worker takes it from ``TASKAUTOMATION_REDIS_URL``, so it is not on the worker's
  command line either.
- ``ExecStart`` is this interpreter with ``-m supervisor worker``: the interpreter running ``install-systemd`` is
  the one that has the package and its ``rq`` extra, in a clone's venv and in an installed tool alike. A clone
  (``main.py`` beside the package) also gets ``PYTHONPATH`` set to the clone, so the unit works even if the
  package was never pip-installed into that interpreter.
- ``KillMode=mixed`` and ``TimeoutStopSec=120``: ``systemctl stop`` sends SIGTERM to the worker only, which lets
  the run in flight finish (RQ's warm shutdown); after two minutes systemd kills what is left, and the run
  ends ``interrupted`` on the supervisor (its ``[Retry]`` policy decides what follows).
- The worker does not notify systemd (``Type=simple``); it is started once the network is up (system unit).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import TaskAutomationError
from ..paths import Paths
from .systemd import (
    UNIT_PREFIX,
    CommandRunner,
    InstallOptions,
    UnitPlan,
    escape_literal,
    exec_quote,
    finish_install,
    owner_of,
    run_command,
    unit_name_for,
)

REDIS_URL_VAR = "TASKAUTOMATION_REDIS_URL"
ENV_FILE_NAME = "worker.env"
WORKER_RESTART_SEC = 10
WORKER_STOP_TIMEOUT_S = 120


@dataclass(frozen=True)
class WorkerUnitSpec:
    """Everything the worker unit's text depends on; no I/O behind any field."""

    home: Path
    python: Path
    pythonpath: Path | None  # a clone's root, or None for an installed package
    queues: tuple[str, ...]
    worker_name: str | None
    user_mode: bool
    run_as: str | None = None  # system mode: User= (None: the unit runs as root)

    @property
    def env_file(self) -> Path:
        return self.home / ENV_FILE_NAME


def worker_unit_name_for(home: Path) -> str:
    """``taskautomation-worker-<home folder name>``: beside a supervisor's unit of a home of the same name."""
    return f"{UNIT_PREFIX}worker-{unit_name_for(home)[len(UNIT_PREFIX) :]}"


def render_worker_unit(spec: WorkerUnitSpec) -> str:
    """The worker unit's text for ``spec``."""
    argv = [str(spec.python), "-m", "supervisor", "worker", "--home", str(spec.home), "--queues", ",".join(spec.queues)]
    if spec.worker_name is not None:
        argv += ["--name", spec.worker_name]
    unit = ["[Unit]", f"Description=Task Automation RQ worker for {escape_literal(str(spec.home))}"]
    if not spec.user_mode:
        unit += ["Wants=network-online.target", "After=network-online.target"]
    unit += ["# Never give up restarting: each try waits RestartSec.", "StartLimitIntervalSec=0"]
    service = ["", "[Service]", "Type=simple", f"ExecStart={' '.join(exec_quote(a) for a in argv)}"]
    service.append(f"WorkingDirectory={escape_literal(str(spec.home))}")
    if spec.run_as is not None and not spec.user_mode:
        service.append(f"User={spec.run_as}")
    service += [
        f"# {REDIS_URL_VAR} (the Redis URL, with its password): kept out of this world-readable file.",
        f"EnvironmentFile={escape_literal(str(spec.env_file))}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if spec.pythonpath is not None:
        service.append(f"Environment={exec_quote('PYTHONPATH=' + str(spec.pythonpath))}")
    service += [
        "# SIGTERM to the worker only: the run in flight may finish; what is left is killed after the timeout.",
        "KillMode=mixed",
        f"TimeoutStopSec={WORKER_STOP_TIMEOUT_S}",
        "Restart=always",
        f"RestartSec={WORKER_RESTART_SEC}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if spec.user_mode else 'multi-user.target'}",
    ]
    return "\n".join(unit + service) + "\n"


def env_file_text(redis_url: str) -> str:
    """``HOME/worker.env``: one double-quoted assignment (systemd's EnvironmentFile syntax)."""
    quoted = redis_url.replace("\\", "\\\\").replace('"', '\\"')
    return f'{REDIS_URL_VAR}="{quoted}"\n'


def write_env_file(path: Path, text: str) -> None:
    """Write ``worker.env`` owner-only from its first byte (it holds the Redis password)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(partial, 0o600)  # an older partial file kept its mode through O_TRUNC
        os.replace(partial, path)
    except OSError as exc:
        raise TaskAutomationError(f"cannot write {path}: {exc.strerror or exc}") from exc


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for what the command prints."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}{sep}{user}{':***' if colon else ''}@{host}"


def install_worker_command(
    paths: Paths,
    options: InstallOptions,
    *,
    redis_url: str | None,
    queues: Sequence[str],
    worker_name: str | None,
    environ: Mapping[str, str],
    out: Callable[[str], None],
    run: CommandRunner = run_command,
) -> int:
    """``install-systemd --worker``: the worker unit and its ``worker.env``; printed, written or also enabled."""
    url = redis_url or environ.get(REDIS_URL_VAR)
    if not url:
        raise TaskAutomationError(f"install-systemd --worker: give the Redis URL with --redis URL (or {REDIS_URL_VAR})")
    clone = Path(__file__).resolve().parents[2]
    spec = WorkerUnitSpec(
        home=paths.home,
        python=Path(os.path.abspath(sys.executable)),
        pythonpath=clone if (clone / "main.py").is_file() else None,
        queues=tuple(queues) or ("default",),
        worker_name=worker_name,
        user_mode=options.user_mode,
        run_as=None if options.user_mode else owner_of(paths.home),
    )
    unit_path = options.unit_folder(environ) / f"{worker_unit_name_for(paths.home)}.service"
    plan = UnitPlan(unit_path=unit_path, text=render_worker_unit(spec))
    if options.dry_run:
        out(f"# {spec.env_file} (mode 0600, not written: --dry-run): {REDIS_URL_VAR}={mask_url(url)}")
    else:
        write_env_file(spec.env_file, env_file_text(url))
        out(f"wrote {spec.env_file} (mode 0600: it holds the Redis URL)")
    return finish_install(plan, options, out=out, run=run)
