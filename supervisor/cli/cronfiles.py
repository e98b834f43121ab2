"""The files of a task folder made from one crontab job (pure): config.ini, main.py, requirements.txt, .env.

Policy (docs/cli.md, "import-crontab" says what differs from cron):

- The schedule is ``[Frequency] Cron`` as written (five fields or a shorthand). ``@reboot`` is
  ``RunOnStartup = True`` with a schedule that has no runs (a ``RunAt`` in the past with ``CatchUp = skip``):
  the task runs once whenever the supervisor loads it and at no other time.
- What cron does not do is not added: ``CatchUp = skip`` (cron runs nothing it missed) and
  ``TimeoutSeconds = 0`` (no time limit), each with a comment on the key to change.
- ``CRON_TZ`` (or, without it, ``TZ``) is ``TimeZone``; ``TZ`` also reaches the command, as under cron.
- ``MAILTO`` is a ``mailto://`` entry in ``[Notify] Urls`` through the local mail server with
  ``On = failure``; an empty MAILTO is no notice at all.
- Every other variable goes to the task's ``.env`` (like every file here, mode 0600: it may hold secrets);
  ``SHELL`` and ``HOME`` are cron's own and are written into main.py; ``LOGNAME`` cannot be set in cron and is
  dropped. A value holding ``${`` cannot be written to a .env as it is (python-dotenv would expand it) and is
  dropped with a note.
- A task starts disabled (``Enabled = False`` with a comment) unless the import says ``enable``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from string import Template

from .cronjob import PythonCall, dotenv_line, mailto_url
from .crontab import CronJob
from .templates import read_template

MARKER_FILE = ".crontab.json"  # which job a folder was made from: a re-import finds it by this
ENV_FILE = ".env"
REBOOT_RUN_AT = "2000-01-01 00:00"
# Cron's own variables: they decide how the job runs rather than being passed through as they are.
_OWN_VARIABLES = ("SHELL", "HOME", "LOGNAME", "MAILTO", "CRON_TZ")
_DISABLED = (
    "; created disabled, so nothing runs twice while cron still runs this job: comment the line out in the\n"
    "; crontab, then set Enabled = True (a running supervisor picks the change up)\n"
)


@dataclass(frozen=True)
class TaskFile:
    name: str  # relative to the task folder; written with mode 0600
    text: str


@dataclass(frozen=True)
class JobSettings:
    """What the job's line and the variables above it decide."""

    zone: str | None
    notify_url: str | None
    shell: str
    home: str | None
    env: tuple[tuple[str, str], ...]  # what goes to .env, in order


def job_settings(job: CronJob) -> JobSettings:
    """Cron's own variables read out of the job's environment; the rest is passed on."""
    latest = dict(job.env)
    passed = tuple((k, v) for k, v in latest.items() if k not in _OWN_VARIABLES and dotenv_keeps(v))
    mailto = job.variable("MAILTO")
    return JobSettings(
        zone=job.variable("CRON_TZ") or job.variable("TZ") or None,
        notify_url=mailto_url(mailto) if mailto is not None else None,
        shell=job.variable("SHELL") or "/bin/sh",
        home=job.variable("HOME") or None,
        env=passed,
    )


def dotenv_keeps(value: str) -> bool:
    """Whether a .env can hold ``value`` as it is: python-dotenv expands ``${NAME}`` even in single quotes and
    has no escape for it, while cron passes a value on unexpanded."""
    return "${" not in value


def config_text(job: CronJob, settings: JobSettings, *, source: str, enable: bool) -> str:
    head = [
        f"; Imported by `taskautomation import-crontab` from {source}, line {job.line}:",
        f";   {job.text.strip()}",
        '; What is different from cron: docs/cli.md, "import-crontab".',
        "",
        "[Frequency]",
    ]
    if job.reboot:
        head += [
            "; @reboot: runs once when the supervisor starts (RunOnStartup below) and at no other time; this RunAt",
            "; in the past, with CatchUp = skip, is a schedule without runs",
            f"RunAt = {REBOOT_RUN_AT}",
        ]
    else:
        head.append(f"Cron = {job.schedule}")
    if settings.zone:
        head.append(f"TimeZone = {settings.zone}")
    head += [
        "AllowedFrom = 00:00",
        "AllowedTo = 23:59",
        "; cron runs nothing it missed while it was down; once = one catch-up run after a downtime",
        "CatchUp = skip",
        "",
        "[Global]",
        *([] if enable else _DISABLED.splitlines()),
        f"Enabled = {enable}",
        "Testing = False",
        f"RunOnStartup = {job.reboot}",
        "",
        "[Limits]",
        "; cron sets no time limit (0 = none): set one in seconds so a run that hangs is stopped",
        "TimeoutSeconds = 0",
    ]
    if settings.notify_url:
        head += [
            "",
            "[Notify]",
            "; cron mailed MAILTO whatever the job printed; this mails a notice when a run fails (its output",
            "; is in the task log); add success to On to hear about every run",
            f"Urls = {settings.notify_url}",
            "On = failure",
        ]
    return "\n".join(head) + "\n"


def main_text(
    job: CronJob,
    settings: JobSettings,
    *,
    name: str,
    source: str,
    command: str,
    stdin: str | None,
    python: PythonCall | None,
) -> str:
    """main.py from the package's template for a Python call or a shell command."""
    common = {"source": source, "line": job.line, "original": job.text.strip(), "name": name}
    if python is not None:
        return _template("cron_python.py.tmpl").substitute(
            common,
            interpreter=repr(python.interpreter),
            script=repr(python.script),
            module=repr(python.module),
            args=repr(list(python.args)),
            home=repr(settings.home),
        )
    return _template("cron_shell.py.tmpl").substitute(
        common,
        command=repr(command),
        stdin=repr(stdin),
        shell=repr(settings.shell),
        user=repr(job.user),
        home=repr(settings.home),
    )


def _template(name: str) -> Template:
    return Template(read_template(name))


def requirements_text(copied_from: str | None, text: str | None) -> str:
    if copied_from is None or text is None:
        return (
            "# The crontab job's script had no requirements.txt next to it: list what it imports here\n"
            "# (anything `pip install -r` accepts); this task's env is built from it.\n"
        )
    return f"# Copied from {copied_from} by import-crontab.\n{text if text.endswith(chr(10)) else text + chr(10)}"


def env_text(settings: JobSettings) -> str | None:
    """The task's .env: the crontab's variables above the job (None when there are none)."""
    if not settings.env:
        return None
    lines = ["# The crontab's variables above this job (imported by import-crontab); python-dotenv syntax."]
    lines += [dotenv_line(key, value) for key, value in settings.env]
    return "\n".join(lines) + "\n"


def marker_text(job: CronJob, *, source: str, identity: list[object]) -> str:
    return json.dumps({"identity": identity, "source": source, "line": job.line, "text": job.text}, indent=2) + "\n"
