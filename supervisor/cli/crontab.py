"""Reading a crontab (pure): job lines, the variables set above each, and the lines that cannot be imported.

Policy (docs/cli.md, "import-crontab"), Debian cron's format (crontab(5)):

- Blank lines and lines whose first non-blank character is ``#`` are ignored; a ``#`` later in a line is part
  of it (cron has no trailing comments).
- ``name = value`` is a variable (blanks around ``=`` are optional; a value in matching single or double
  quotes keeps its leading and trailing blanks). A variable applies to the job lines *below* it, as in cron,
  so every job carries the variables as they stood at its line.
- A job line is five time fields (or one ``@`` shorthand), then the user name when the crontab is a system
  one (``/etc/crontab``, ``/etc/cron.d/*``), then the command: the rest of the line.
- The five fields are checked by the parser the scheduler uses (cronsim, config/schedule_keys.py); the
  extensions other crons have and Debian's does not (``L``, ``W``, ``#``, ``?``) are refused by name, because
  cronsim would accept some of them and the job would not mean what it meant under cron.
- A line that is neither (a syntax error, an unknown shorthand, an extension, a variable whose name cannot
  be passed on) is listed with its line number and the reason; every other line is still read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config.schedule_keys import cron_expression
from ..config.values import InvalidValue

REBOOT = "@reboot"
# The shorthands Debian's cron knows; all but @reboot are plain schedules the Cron key accepts as they are.
MACROS = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Month and weekday names are removed before looking for extension letters (``jul`` holds an L, ``wed`` a W).
_NAMES = re.compile(r"(?i)(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat)")
_EXTENSIONS = {
    "L": "'L' (last day)",
    "W": "'W' (nearest weekday)",
    "#": "'#' (nth weekday of the month)",
    "?": "'?' (no specific value)",
}
_VARIABLE = re.compile(r"([^\s=]+)\s*=(.*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CronJob:
    """One job line, with everything cron would have used to run it."""

    line: int  # 1-based line number in the crontab text
    text: str  # the line as written
    schedule: str  # the five fields joined by single blanks, or a shorthand in lower case (``@daily``)
    user: str | None  # the user field of a system crontab; None for a user's own crontab
    command: str  # the rest of the line, before cron's % rules
    env: tuple[tuple[str, str], ...]  # the variables set above this line, in file order (a later one wins)

    @property
    def reboot(self) -> bool:
        return self.schedule == REBOOT

    def variable(self, name: str) -> str | None:
        """The value of ``name`` at this line (the last setting above it), None when unset."""
        found = None
        for key, value in self.env:
            if key == name:
                found = value
        return found


@dataclass(frozen=True)
class SkippedLine:
    """A line that cannot be imported, and why."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class Crontab:
    jobs: tuple[CronJob, ...]
    skipped: tuple[SkippedLine, ...]


def parse_crontab(text: str, *, system: bool) -> Crontab:
    """Read ``text`` as a user crontab, or as a system one (a user field after the schedule) when ``system``."""
    jobs: list[CronJob] = []
    skipped: list[SkippedLine] = []
    env: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            variable = parse_variable(stripped)
            if variable is not None:
                env.append(variable)
                continue
            jobs.append(_job(number, line, system=system, env=tuple(env)))
        except InvalidValue as exc:
            skipped.append(SkippedLine(number, line, str(exc)))
    return Crontab(jobs=tuple(jobs), skipped=tuple(skipped))


def parse_variable(line: str) -> tuple[str, str] | None:
    """``name = value`` as cron reads it; None when the line is not a variable (then it is a job line)."""
    match = _VARIABLE.fullmatch(line)
    if match is None:
        return None
    name, value = match.group(1), match.group(2).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    if not _NAME.fullmatch(name):
        raise InvalidValue(
            f"variable {name!r}: not a name a task's .env can set (letters, digits and _, not starting with a digit)"
        )
    return name, value


def _job(number: int, line: str, *, system: bool, env: tuple[tuple[str, str], ...]) -> CronJob:
    stripped = line.strip()
    if stripped.startswith("@"):
        head, *tail = stripped.split(None, 1)
        schedule = head.lower()
        if schedule not in MACROS:
            raise InvalidValue(f"unknown shorthand {head!r} (cron knows {', '.join(MACROS)})")
    else:
        parts = stripped.split(None, 5)
        if len(parts) < 6:
            raise InvalidValue("not a variable (name = value) and not a job (five time fields, then the command)")
        schedule = _schedule(parts[:5])
        tail = parts[5:]
    rest = tail[0] if tail else ""
    user = None
    if system:
        words = rest.split(None, 1)
        if not words:
            raise InvalidValue("no user field (a system crontab names the user before the command)")
        user, rest = words[0], words[1] if len(words) > 1 else ""
    if not rest.strip():
        raise InvalidValue(f"no command after the {'schedule and user' if system else 'schedule'}")
    return CronJob(line=number, text=line, schedule=schedule, user=user, command=rest.strip(), env=env)


def _schedule(fields: list[str]) -> str:
    """The five fields, checked: Debian cron's syntax only, and a schedule that matches some date."""
    for name, field in zip(_FIELD_NAMES, fields):
        letters = _NAMES.sub("", field).upper()
        for mark, meaning in _EXTENSIONS.items():
            if mark in letters:
                raise InvalidValue(
                    f"{name} field {field!r} uses the cron extension {meaning}, which Debian's cron does not have"
                )
    expression = " ".join(fields)
    try:
        cron_expression(expression)
    except InvalidValue as exc:
        raise InvalidValue(f"schedule {expression!r}: {exc}") from None
    return expression
