"""Read Tasks/ and one task folder into what the loop needs to load it: what changed, its spec, its env key,
or the problem.

The per-task error boundary of loading: whatever goes wrong while reading one folder (an invalid config.ini,
a broken main.py, an unreadable requirements.txt, any unexpected exception) becomes that task's problem,
never an exception that could stop the loop and every other task with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..config.schema import read_task_config
from ..discovery.scan import TaskDiff, TaskFolder, check_task_source, diff_tasks, scan_tasks
from ..envs.builder import EnvBuilder
from ..errors import TaskAutomationError, TaskLoadError
from ..model import FailureBackoff, Limits, NotifySettings, Retention, RetryPolicy, TaskSpec
from ..paths import CONFIG_FILE, MAIN_FILE, REQUIREMENTS_FILE


@dataclass(frozen=True)
class FolderReading:
    """The result of reading a folder: ``problem`` set, or ``spec`` (and, when enabled, ``wanted_key``)."""

    spec: TaskSpec | None = None
    wanted_key: str | None = None  # None for a disabled task: its env is not needed now
    warnings: tuple[str, ...] = ()
    problem: str | None = None
    level: int = logging.ERROR  # how loudly ``problem`` is logged


def read_folder(
    folder: TaskFolder,
    *,
    defaults: Limits,
    envs: EnvBuilder,
    notify_defaults: NotifySettings = NotifySettings(),
    retry_defaults: RetryPolicy = RetryPolicy(),
    backoff_defaults: FailureBackoff = FailureBackoff(),
    retention_defaults: Retention = Retention(),
) -> FolderReading:
    name = folder.name
    if folder.missing:
        return FolderReading(
            problem=f"task {name!r}: {folder.path}: incomplete, {' and '.join(folder.missing)} "
            "missing; waiting for the folder to be complete",
            level=logging.WARNING,
        )
    try:
        result = read_task_config(
            folder.path / CONFIG_FILE,
            task=name,
            defaults=defaults,
            notify_defaults=notify_defaults,
            retry_defaults=retry_defaults,
            backoff_defaults=backoff_defaults,
            retention_defaults=retention_defaults,
        )
        if not result.spec.enabled:
            return FolderReading(spec=result.spec, warnings=result.warnings)
        check_task_source(folder.path / MAIN_FILE, task=name)
        wanted = envs.key_for(folder.path / REQUIREMENTS_FILE, task_dir=folder.path)
    except TaskAutomationError as exc:
        return FolderReading(problem=str(exc))
    except OSError as exc:
        return FolderReading(problem=f"task {name!r}: {exc.filename or folder.path}: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - one folder must never take the loop down
        return FolderReading(problem=f"task {name!r}: {folder.path}: cannot be loaded: {type(exc).__name__}: {exc}")
    return FolderReading(spec=result.spec, wanted_key=wanted, warnings=result.warnings)


def scan_changes(
    tasks_dir: Path, loaded: Mapping[str, TaskFolder], *, logger: logging.Logger, first: bool
) -> tuple[dict[str, TaskFolder], TaskDiff] | None:
    """Scan ``tasks_dir`` and diff it against the ``loaded`` folders; None when it cannot be scanned now
    (Tasks/ unlistable for a moment: permissions, a remount), and then every loaded task stays as it is."""
    try:
        scanned = scan_tasks(tasks_dir)
    except Exception as exc:  # noqa: BLE001 - whatever the scan hit, the loaded tasks keep running
        detail = exc if isinstance(exc, TaskLoadError) else f"{tasks_dir}: cannot be scanned: {exc!r}"
        logger.error("%s; keeping the loaded tasks as they are", detail)
        return None
    if not scanned and first:
        logger.warning(
            "no task folders in %s yet: add one (python3 -m supervisor new NAME); it is picked up without a restart",
            tasks_dir,
        )
    return scanned, diff_tasks(loaded, scanned)
