"""``import-crontab [FILE | -] [--system] [--dry-run] [--enable]``: one task folder per crontab job.

Policy (docs/cli.md, "import-crontab"):

- The crontab comes from FILE, from standard input (``-``), else from ``crontab -l`` (``--system``:
  ``/etc/crontab``). It is only read, never changed: the summary says how to comment the imported lines out.
- Every job line becomes one folder under ``Tasks/`` (cronfiles.py writes its files). A line that cannot be
  converted is listed with its number and the reason, and the others are still imported (exit 1 then).
- A folder remembers its job (``.crontab.json``: user, schedule, command and the how-many-th identical line
  it is), so importing the same crontab again finds every job already imported, creates nothing new and
  says so. Names come from the command (cronjob.py) and never reuse a folder that exists.
- A folder is written into a hidden sibling and renamed into place, so a running supervisor never sees a
  half-written task. It is private to its owner (folders 0700, files 0600), as cron keeps a crontab: a
  command line may hold a password. ``--dry-run`` prints the plan and writes nothing, not even the home.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..config.notify_keys import apprise_url_problem
from ..config.schedule_keys import time_zone
from ..config.values import InvalidValue
from ..errors import TaskAutomationError
from ..paths import CONFIG_FILE, MAIN_FILE, OUTPUT_DIR, REQUIREMENTS_FILE, Paths
from . import cronfiles
from .cronjob import PythonCall, job_slug, python_call, split_percent, unique_name
from .crontab import CronJob, SkippedLine, parse_crontab

SYSTEM_CRONTAB = Path("/etc/crontab")
_COMMAND_WIDTH = 48


@dataclass(frozen=True)
class JobPlan:
    """What one job line becomes: a new folder (``files``), or the folder it was imported as before."""

    job: CronJob
    name: str
    kind: str  # "python" or "shell"
    existing: bool  # imported before: nothing is written
    files: tuple[cronfiles.TaskFile, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ImportPlan:
    source: str
    jobs: tuple[JobPlan, ...]
    skipped: tuple[SkippedLine, ...]


def read_crontab(
    given: str | None, *, system: bool, run: Callable[..., subprocess.CompletedProcess[str]]
) -> tuple[str, str]:
    """(the crontab's text, where it came from for messages)."""
    if given == "-":
        return sys.stdin.read(), "<stdin>"
    if given is not None:
        path = Path(given)
        try:
            return path.read_text(encoding="utf-8"), str(path.resolve())
        except UnicodeDecodeError as exc:
            raise TaskAutomationError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if system:
        return SYSTEM_CRONTAB.read_text(encoding="utf-8"), str(SYSTEM_CRONTAB)
    crontab = shutil.which("crontab")
    if crontab is None:
        raise TaskAutomationError(
            "no FILE given and no `crontab` command on PATH: name a crontab file (or - for stdin)"
        )
    result = run([crontab, "-l"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise TaskAutomationError(
            f"crontab -l failed (exit {result.returncode}): {reason[-1] if reason else 'no output'}"
        )
    return result.stdout, f"crontab -l ({pwd.getpwuid(os.getuid()).pw_name})"


def imported_jobs(tasks: Path) -> dict[str, str]:
    """identity (as JSON) -> folder name, for every folder an earlier import made."""
    found: dict[str, str] = {}
    if not tasks.is_dir():
        return found
    for folder in sorted(tasks.iterdir()):
        marker = folder / cronfiles.MARKER_FILE
        try:
            identity = json.loads(marker.read_text(encoding="utf-8"))["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found[json.dumps(identity)] = folder.name
    return found


def plan_import(text: str, *, source: str, system: bool, tasks: Path, enable: bool) -> ImportPlan:
    """The plan for ``text`` against the folders in ``tasks``; reads the disk, writes nothing."""
    crontab = parse_crontab(text, system=system)
    before = imported_jobs(tasks)
    taken = {p.name for p in tasks.iterdir()} if tasks.is_dir() else set()
    seen: Counter[str] = Counter()
    plans: list[JobPlan] = []
    skipped = list(crontab.skipped)
    me = pwd.getpwuid(os.getuid())
    for job in crontab.jobs:
        key = json.dumps([job.user, job.schedule, job.command])
        seen[key] += 1
        identity: list[object] = [job.user, job.schedule, job.command, seen[key]]
        try:
            plan = _plan_job(job, identity=identity, before=before, taken=taken, me=me, source=source, enable=enable)
        except InvalidValue as exc:
            skipped.append(SkippedLine(job.line, job.text, str(exc)))
            continue
        taken.add(plan.name)
        plans.append(plan)
    return ImportPlan(source=source, jobs=tuple(plans), skipped=tuple(sorted(skipped, key=lambda s: s.line)))


def _plan_job(
    job: CronJob,
    *,
    identity: list[object],
    before: dict[str, str],
    taken: set[str],
    me: pwd.struct_passwd,
    source: str,
    enable: bool,
) -> JobPlan:
    settings = cronfiles.job_settings(job)
    if settings.zone is not None:
        try:
            time_zone(settings.zone)
        except InvalidValue as exc:
            raise InvalidValue(f"time zone {settings.zone!r} (CRON_TZ/TZ above the line): {exc}") from None
    account = me
    if job.user is not None:
        try:
            account = pwd.getpwnam(job.user)
        except KeyError:
            raise InvalidValue(f"user {job.user!r} does not exist on this machine") from None
    command, stdin = split_percent(job.command)
    workdir = settings.home or account.pw_dir
    python = None
    if stdin is None and account.pw_uid == me.pw_uid:
        python = python_call(command, workdir=workdir, user_home=account.pw_dir)
    kind = "python" if python is not None else "shell"
    known = before.get(json.dumps(identity))
    if known is not None:
        return JobPlan(job=job, name=known, kind=kind, existing=True, files=(), notes=())
    name = unique_name(job_slug(command, python), taken)
    notes = _notes(job, python=python, account=account, me=me)
    if settings.notify_url is not None and apprise_url_problem(settings.notify_url) is not None:
        notes.append(f"MAILTO {job.variable('MAILTO')!r} is not an address a notice can go to: no [Notify] written")
        settings = replace(settings, notify_url=None)
    files = [
        cronfiles.TaskFile(CONFIG_FILE, cronfiles.config_text(job, settings, source=source, enable=enable)),
        cronfiles.TaskFile(
            MAIN_FILE,
            cronfiles.main_text(job, settings, name=name, source=source, command=command, stdin=stdin, python=python),
        ),
        cronfiles.TaskFile(REQUIREMENTS_FILE, _requirements(python, notes)),
        cronfiles.TaskFile(cronfiles.MARKER_FILE, cronfiles.marker_text(job, source=source, identity=identity)),
    ]
    env = cronfiles.env_text(settings)
    if env is not None:
        files.append(cronfiles.TaskFile(cronfiles.ENV_FILE, env))
    return JobPlan(job=job, name=name, kind=kind, existing=False, files=tuple(files), notes=tuple(notes))


def _notes(
    job: CronJob,
    *,
    python: PythonCall | None,
    account: pwd.struct_passwd,
    me: pwd.struct_passwd,
) -> list[str]:
    notes = []
    if job.variable("CRON_TZ") is None and job.variable("TZ"):
        notes.append(
            f"TZ={job.variable('TZ')} read as the schedule's TimeZone (Debian's cron reads it in the machine's zone)"
        )
    if job.user is not None and account.pw_uid != me.pw_uid:
        notes.append(f"runs as {job.user} only when the supervisor runs as root")
    if job.variable("LOGNAME") is not None:
        notes.append("LOGNAME cannot be set in a crontab: dropped")
    for key, value in dict(job.env).items():
        if not cronfiles.dotenv_keeps(value):
            notes.append(f"{key}={value}: a .env would expand its '${{': not passed on, set it in main.py if needed")
    if python is not None:
        notes.append(f"runs with this task's env python instead of {python.interpreter}")
    return notes


def _requirements(python: PythonCall | None, notes: list[str]) -> str:
    script = python.script if python is not None else None
    if script is None:
        return cronfiles.requirements_text(None, None)
    beside = Path(script).parent / REQUIREMENTS_FILE
    try:
        return cronfiles.requirements_text(str(beside), beside.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return cronfiles.requirements_text(None, None)
    except (OSError, UnicodeDecodeError) as exc:
        notes.append(f"{beside} could not be read ({exc}): requirements.txt left empty")
        return cronfiles.requirements_text(None, None)


def write_job(tasks: Path, plan: JobPlan) -> Path:
    """Write one planned folder: into a hidden sibling first, then renamed into place."""
    folder = tasks / plan.name
    staging = tasks / f".import-{plan.name}"
    if staging.exists():
        shutil.rmtree(staging)
    # Private like the crontab it came from (cron keeps crontabs 0600): commands may hold passwords.
    staging.mkdir(mode=0o700)
    (staging / OUTPUT_DIR).mkdir(mode=0o700)
    for item in plan.files:
        fd = os.open(staging / item.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(item.text)
    staging.rename(folder)
    return folder


# ---------------------------------------------------------------------------------------------------- output
def plan_lines(plan: ImportPlan) -> list[str]:
    """The plan as a table (LINE, TASK, SCHEDULE, KIND, STATUS, COMMAND), then the notes and skipped lines."""
    rows = [("LINE", "TASK", "SCHEDULE", "KIND", "STATUS", "COMMAND")]
    for job in plan.jobs:
        command = (
            job.job.command if len(job.job.command) <= _COMMAND_WIDTH else job.job.command[: _COMMAND_WIDTH - 1] + "…"
        )
        status = "imported before" if job.existing else "new"
        rows.append((str(job.job.line), job.name, job.job.schedule, job.kind, status, command))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5] for row in rows]
    for job in plan.jobs:
        lines += [f"line {job.job.line} ({job.name}): {note}" for note in job.notes]
    lines += [f"line {s.line}: not imported: {s.reason}: {s.text.strip()}" for s in plan.skipped]
    return lines


def comment_out_hint(plan: ImportPlan, lines: list[int], *, given: str | None, system: bool) -> str:
    script = ";".join(f"{n}s/^/#/" for n in lines)
    numbers = ", ".join(str(n) for n in lines)
    if given is None and not system:
        return f"so cron stops running them, comment lines {numbers} out: crontab -l | sed '{script}' | crontab -"
    if given == "-":
        return f"so cron stops running them, comment lines {numbers} of that crontab out"
    return f"so cron stops running them, comment lines {numbers} out: sed -i '{script}' {plan.source}"


def import_crontab(args: argparse.Namespace, paths: Paths) -> int:
    """The command: read, plan, print the plan, write the new folders (unless --dry-run), say what is next."""
    text, source = read_crontab(args.file, system=args.system, run=subprocess.run)
    plan = plan_import(text, source=source, system=args.system, tasks=paths.tasks, enable=args.enable)
    for line in plan_lines(plan):
        print(line)
    new = [job for job in plan.jobs if not job.existing]
    if args.dry_run:
        print(f"dry run: {len(new)} task(s) would be created in {paths.tasks}; nothing written")
        return 1 if plan.skipped else 0
    paths.tasks.mkdir(parents=True, exist_ok=True)
    for job in new:
        write_job(paths.tasks, job)
    if not plan.jobs:
        print(f"no job lines to import in {source}")
    elif not new:
        print(f"nothing new: every job of {source} was imported before (delete a folder to import its job again)")
    else:
        state = "enabled" if args.enable else "disabled (set Enabled = True in each config.ini when ready)"
        print(f"created {len(new)} task(s) in {paths.tasks}, {state}; check them with: taskautomation validate")
        print(comment_out_hint(plan, [job.job.line for job in new], given=args.file, system=args.system))
    return 1 if plan.skipped else 0
