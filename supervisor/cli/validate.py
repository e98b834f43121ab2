"""`validate`: check task folders and the home config without running anything.

Checks, per task: the folder is complete (main.py, config.ini), config.ini parses with valid values (warnings
for unknown keys and defaults used), main.py compiles and defines main(), requirements.txt is readable UTF-8
and each requirement line is a valid requirement (packaging) or pip option (pip's rules), named
by file and line number; a PEP 723 block in main.py is valid, is not next to a requirements.txt and its
requires-python fits this Python; every [Notify] URL is one Apprise accepts; a .env readable by group/others
is a warning. Nothing is imported, built, installed or sent.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from ..config.schema import read_home_config, read_task_config
from ..discovery.scan import TaskFolder, check_task_source, scan_tasks
from ..envs.pep723 import check_task_block
from ..envs.reqcheck import check_file
from ..errors import TaskAutomationError
from ..execution.secrets import read_env_file
from ..model import HomeConfig
from ..paths import Paths


def check_requirements(path: Path, *, task: str) -> list[str]:
    """Problems in one requirements.txt (empty list when pip would accept every line); see reqcheck."""
    if not path.exists() and not path.is_symlink():
        return []  # a missing requirements.txt means no packages (a dangling link is reported by reqcheck)
    return [f"task {task!r}: {problem}" for problem in check_file(path, environ=os.environ)]


def validate_home(paths: Paths, *, only: str | None = None) -> tuple[int, list[str]]:
    """Return (number of problems, report lines). ``only`` restricts the check to one task."""
    report: list[str] = []
    problems = 0
    home_config = HomeConfig()  # its defaults, when taskautomation.ini itself is broken
    try:
        home_config, warnings = read_home_config(paths.home_config)
        if home_config.retention.enabled:
            report.append(f"home: Output/ retention default: {home_config.retention.describe()}")
        report.extend(f"warning: {w}" for w in warnings)
        report.extend(f"warning: {w}" for w in read_env_file(paths.home_secrets)[1])
    except TaskAutomationError as exc:
        report.append(f"error: {exc}")
        problems += 1
    folders = scan_tasks(paths.tasks) if paths.tasks.is_dir() else {}
    if only is not None:
        if only not in folders:
            return 1, [f"error: no task named {only!r} in {paths.tasks}"]
        folders = {only: folders[only]}
    for name, folder in sorted(folders.items(), key=lambda kv: kv[0].casefold()):
        problems += _check_task(paths, name, folder, home_config, report)
    if not folders:
        report.append(f"no task folders in {paths.tasks}")
    report.append(f"{len(folders)} task(s) checked, {problems} problem(s)")
    return problems, report


def _check_task(paths: Paths, name: str, folder: TaskFolder, home_config: HomeConfig, report: list[str]) -> int:
    """Append one task's report lines (ok/FAIL, errors, warnings, the Output/ retention in force); return its
    number of errors."""
    errors: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    # Present in any form counts: reading it then says what is wrong (a FIFO, a directory, too large).
    errors.extend(f"task {name!r}: {folder.path / filename}: missing" for filename in folder.missing)
    if not errors:
        try:
            result = read_task_config(
                paths.task_config(name),
                task=name,
                defaults=home_config.limits,
                notify_defaults=home_config.notify,
                retry_defaults=home_config.retry,
                backoff_defaults=home_config.failure_backoff,
                retention_defaults=home_config.retention,
            )
            warnings.extend(result.warnings)
            if result.spec.retention.enabled:
                notes.append(f"Output/ retention: {result.spec.retention.describe()}")
        except TaskAutomationError as exc:
            errors.append(str(exc))
        try:
            check_task_source(paths.task_main(name), task=name)
        except TaskAutomationError as exc:
            errors.append(str(exc))
    errors.extend(check_requirements(paths.task_requirements(name), task=name))
    errors.extend(
        check_task_block(folder.path, task=name, python_version=platform.python_version(), python=Path(sys.executable))
    )
    warnings.extend(read_env_file(paths.task_secrets(name), task=name)[1])  # names files, never values
    report.append(f"{'FAIL' if errors else 'ok  '}  {name}")
    report.extend(f"      error: {e}" for e in errors)
    report.extend(f"      warning: {w}" for w in warnings)
    report.extend(f"      {n}" for n in notes)
    return len(errors)
