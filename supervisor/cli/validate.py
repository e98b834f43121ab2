"""`validate`: check task folders and the home config without running anything.

Checks, per task: the folder is complete (main.py, config.ini), config.ini parses with valid values (warnings
for unknown keys and defaults used), main.py compiles and defines main(), requirements.txt is readable UTF-8
and each requirement line is a valid requirement (packaging) or pip option (pip's rules), named
by file and line number; a PEP 723 block in main.py is valid, is not next to a requirements.txt and its
requires-python fits this Python; every [Notify] URL is one Apprise accepts; a .env readable by group/others
is a warning; a cycle of [Frequency] After is an error on each task of it, an After naming a missing or
disabled task a warning (scheduling/chains.py, as the supervisor does). Nothing is imported, built,
installed or sent.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Iterable, Sequence

from ..config.schema import read_home_config, read_task_config
from ..discovery.scan import TaskFolder, check_task_source, scan_tasks
from ..envs.pep723 import check_task_block
from ..envs.reqcheck import check_file
from ..errors import TaskAutomationError
from ..execution.secrets import read_env_file
from ..model import HomeConfig
from ..paths import Paths
from ..scheduling.chains import find_cycles, upstream_problems


def check_requirements(path: Path, *, task: str) -> list[str]:
    """Problems in one requirements.txt (empty list when pip would accept every line); see reqcheck."""
    if not path.exists() and not path.is_symlink():
        return []  # a missing requirements.txt means no packages (a dangling link is reported by reqcheck)
    return [f"task {task!r}: {problem}" for problem in check_file(path, environ=os.environ)]


def chain_checks(paths: Paths, folders: Iterable[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Task -> (errors, warnings) of [Frequency] After across every task folder (an unreadable config.ini
    counts as a task without After; its own error is reported where it is read)."""
    after: dict[str, tuple[str, ...]] = {}
    enabled: dict[str, bool] = {}
    for name in folders:
        try:
            spec = read_task_config(paths.task_config(name), task=name).spec
        except TaskAutomationError:
            enabled[name] = True
            continue
        enabled[name] = spec.enabled
        if spec.after and spec.enabled:
            after[name] = spec.after
    cycles = find_cycles(after)
    found: dict[str, tuple[list[str], list[str]]] = {}
    for name, ups in after.items():
        where = f"task {name!r}: {paths.task_config(name)}: [Frequency] After = {', '.join(ups)!r}"
        errors = [f"{where}: a cycle {cycles[name]}"] if name in cycles else []
        found[name] = (errors, upstream_problems(name, ups, enabled=enabled))
    return found


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
    chains = chain_checks(paths, [name for name, folder in folders.items() if not folder.missing])
    if only is not None:
        if only not in folders:
            return 1, [f"error: no task named {only!r} in {paths.tasks}"]
        folders = {only: folders[only]}
    for name, folder in sorted(folders.items(), key=lambda kv: kv[0].casefold()):
        problems += _check_task(paths, name, folder, home_config, report, chain=chains.get(name, ([], [])))
    if not folders:
        report.append(f"no task folders in {paths.tasks}")
    report.append(f"{len(folders)} task(s) checked, {problems} problem(s)")
    return problems, report


def _check_task(
    paths: Paths,
    name: str,
    folder: TaskFolder,
    home_config: HomeConfig,
    report: list[str],
    *,
    chain: tuple[Sequence[str], Sequence[str]],
) -> int:
    """Append one task's report lines (ok/FAIL, errors, warnings, the Output/ retention in force); return its
    number of errors. ``chain``: its [Frequency] After errors (a cycle) and warnings (a missing upstream)."""
    errors: list[str] = list(chain[0])
    warnings: list[str] = list(chain[1])
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
