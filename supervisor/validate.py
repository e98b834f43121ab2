"""`validate`: check task folders and the home config without running anything.

Checks, per task: the folder is complete (main.py, config.ini), config.ini parses with valid values (warnings
for unknown keys and defaults used), main.py compiles and defines main(), requirements.txt is readable UTF-8
and each requirement line looks like a requirement or a pip option. Nothing is imported, built or installed.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import safefile
from .config import read_home_config, read_task_config
from .discovery import check_task_source, scan_tasks
from .envs import normalize_requirements
from .errors import TaskAutomationError
from .paths import Paths
from .safefile import UnsafeFileError
from .spec import Limits

# A PEP 508 requirement starts with a distribution name; anything else must be an option, a path or a URL.
_REQUIREMENT_START = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[|==|>=|<=|~=|!=|===|>|<|;|@|$|\s)")
_LOCATION_START = ("-", ".", "/", "~", "$", "file:", "http://", "https://", "git+", "hg+", "svn+", "bzr+")


def check_requirements(path: Path, *, task: str) -> list[str]:
    """Problems in one requirements.txt (empty list when it looks installable)."""
    try:
        text = safefile.read_text(path, max_bytes=safefile.REQUIREMENTS_MAX_BYTES)
    except FileNotFoundError:
        return []  # a missing requirements.txt means no packages
    except UnsafeFileError as exc:
        return [f"task {task!r}: {exc}"]
    problems = []
    for line in normalize_requirements(text):
        if line.startswith(_LOCATION_START) or _REQUIREMENT_START.match(line) or "://" in line:
            continue
        problems.append(f"task {task!r}: {path}: {line!r} is neither a requirement nor a pip option")
    return problems


def validate_home(paths: Paths, *, only: str | None = None) -> tuple[int, list[str]]:
    """Return (number of problems, report lines). ``only`` restricts the check to one task."""
    report: list[str] = []
    problems = 0
    defaults = Limits()
    try:
        home_config, warnings = read_home_config(paths.home_config)
        defaults = home_config.limits
        report.extend(f"warning: {w}" for w in warnings)
    except TaskAutomationError as exc:
        report.append(f"error: {exc}")
        problems += 1
    folders = scan_tasks(paths.tasks) if paths.tasks.is_dir() else {}
    if only is not None:
        if only not in folders:
            return 1, [f"error: no task named {only!r} in {paths.tasks}"]
        folders = {only: folders[only]}
    for name, folder in sorted(folders.items(), key=lambda kv: kv[0].casefold()):
        errors: list[str] = []
        warnings_: list[str] = []
        # Present in any form counts: reading it then says what is wrong (a FIFO, a directory, too large).
        errors.extend(f"task {name!r}: {folder.path / filename}: missing" for filename in folder.missing)
        if not errors:
            try:
                result = read_task_config(paths.task_config(name), task=name, defaults=defaults)
                warnings_.extend(result.warnings)
            except TaskAutomationError as exc:
                errors.append(str(exc))
            try:
                check_task_source(paths.task_main(name), task=name)
            except TaskAutomationError as exc:
                errors.append(str(exc))
        errors.extend(check_requirements(paths.task_requirements(name), task=name))
        report.append(f"{'FAIL' if errors else 'ok  '}  {name}")
        report.extend(f"      error: {e}" for e in errors)
        report.extend(f"      warning: {w}" for w in warnings_)
        problems += len(errors)
    if not folders:
        report.append(f"no task folders in {paths.tasks}")
    report.append(f"{len(folders)} task(s) checked, {problems} problem(s)")
    return problems, report
