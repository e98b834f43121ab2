"""What a crontab job's command becomes (pure): cron's ``%`` rules, a Python call or a shell command, a name.

Policy (docs/cli.md, "import-crontab"):

- ``%`` as cron reads it: the command ends at the first ``%`` not escaped by a backslash; the text after it is
  the command's standard input, every further unescaped ``%`` a newline; ``\\%`` is a literal ``%`` in both
  parts (other backslashes stay as they are).
- A *Python call* is a plain command line (no shell syntax: no pipes, redirections, variables, globs, ``;``,
  ``&&``, standard input from ``%``) whose program is a Python interpreter (any path, ``python``,
  ``python3``, ``python3.12``, or ``env python3``), with harmless flags only (``-u -B -E -s -I -q``), then
  ``SCRIPT ARGS`` or ``-m MODULE ARGS``. A leading ``~`` is the job user's home, a relative script is
  relative to the job's working folder (cron's: its HOME). Everything else is a shell command, run with the
  crontab's SHELL exactly as cron would run it.
- A name is derived from the command alone (the script's stem, the module, or the first program that does
  real work and its last argument), made a Python identifier; the caller makes it unique.
"""

from __future__ import annotations

import keyword
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

# Characters after which a command needs a shell to mean what it means under cron.
_SHELL_SYNTAX = set("|&;<>()$`*?[]{}!\\\n")
_INTERPRETER = re.compile(r"python(\d+(\.\d+)?)?")
_HARMLESS_FLAGS = set("uBEsIq")
# Programs that set the stage rather than do the work: the name comes from the command after them.
_STAGE = frozenset(
    {"cd", "test", "[", "true", "exec", "nice", "ionice", "env", "sudo", "timeout", "flock", "sleep", "chronic"}
)
_OPERATORS = re.compile(r"&&|\|\||[;|&(){}]")
_REDIRECT = re.compile(r"^\d*[<>]")
_BARE_REDIRECT = re.compile(r"\d*(>>?|<<?|>\||&>>?)")
_MAX_NAME = 40


@dataclass(frozen=True)
class PythonCall:
    """A command that runs one Python script or module: the task runs it in its own env instead."""

    interpreter: str  # as written on the crontab line
    script: str | None  # absolute path; None for -m
    module: str | None
    args: tuple[str, ...]


def split_percent(command: str) -> tuple[str, str | None]:
    """(the command cron runs, its standard input or None) under cron's ``%`` rules."""
    out: list[str] = []
    escaped = False
    for index, ch in enumerate(command):
        if escaped:
            if ch == "%":
                out[-1] = "%"  # the backslash only escaped the percent sign
            else:
                out.append(ch)
            escaped = False
            continue
        if ch == "%":
            return "".join(out), _stdin(command[index + 1 :])
        out.append(ch)
        escaped = ch == "\\"
    return "".join(out), None


def _stdin(text: str) -> str:
    """The input part: unescaped ``%`` -> newline, ``\\%`` -> ``%``; other backslashes stay."""
    out: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            if ch != "%":
                out.append("\\")
        elif ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
    if escaped:
        out.append("\\")
    return "".join(out)


def python_call(command: str, *, workdir: str, user_home: str) -> PythonCall | None:
    """The Python call ``command`` is (see the policy), or None when it needs a shell."""
    if any(ch in _SHELL_SYNTAX for ch in command):
        return None
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: the shell will say what it makes of it
        return None
    if not words or any(word.startswith("#") for word in words) or "=" in words[0]:
        return None
    if PurePosixPath(words[0]).name == "env" and len(words) > 1:
        words = words[1:]
    interpreter = words[0]
    if not _INTERPRETER.fullmatch(PurePosixPath(interpreter).name):
        return None
    rest = words[1:]
    while rest and rest[0].startswith("-") and rest[0] != "-m":
        if not set(rest[0][1:]) <= _HARMLESS_FLAGS or rest[0] == "-":
            return None
        rest = rest[1:]
    if not rest:
        return None
    if rest[0] == "-m":
        if len(rest) < 2 or not all(part.isidentifier() for part in rest[1].split(".")):
            return None
        return PythonCall(interpreter=interpreter, script=None, module=rest[1], args=tuple(rest[2:]))
    script = _home_path(rest[0], user_home)
    if not os.path.isabs(script):
        script = os.path.join(workdir, script)
    return PythonCall(interpreter=interpreter, script=os.path.normpath(script), module=None, args=tuple(rest[1:]))


def _home_path(word: str, user_home: str) -> str:
    if word == "~" or word.startswith("~/"):
        return user_home + word[1:]
    return word


def job_slug(command: str, python: PythonCall | None) -> str:
    """A Python identifier naming what the command does (not yet unique)."""
    if python is not None:
        base = PurePosixPath(python.script).stem if python.script else python.module or ""
        return identifier(base)
    for part in _OPERATORS.split(command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        words = _without_redirections([w for w in words if "=" not in w.split("/")[0]])
        if not words or PurePosixPath(words[0]).name in _STAGE:
            continue
        program = PurePosixPath(words[0]).name
        arguments = [w for w in words[1:] if not w.startswith("-") and not w.startswith("/dev/")]
        last = PurePosixPath(arguments[-1]).name if arguments else ""
        return identifier(f"{program}_{last}" if last and len(last) <= 20 else program)
    return identifier(command)


def _without_redirections(words: list[str]) -> list[str]:
    """``a > out 2>&1 b`` -> ``a b``: a redirection and its target name nothing the command does."""
    kept: list[str] = []
    target_next = False
    for word in words:
        if target_next:
            target_next = False
        elif _REDIRECT.match(word):
            target_next = _BARE_REDIRECT.fullmatch(word) is not None  # its target is the next word
        else:
            kept.append(word)
    return kept


def identifier(text: str) -> str:
    """``text`` made a lower-case Python identifier of at most 40 characters (``cron_job`` for nothing)."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:_MAX_NAME].strip("_") or "cron_job"
    if cleaned[0].isdigit():
        cleaned = f"job_{cleaned}"
    return f"{cleaned}_job" if keyword.iskeyword(cleaned) else cleaned


def unique_name(slug: str, taken: set[str]) -> str:
    """``slug``, else ``slug_2``, ``slug_3``, ...: the first not in ``taken`` (compared case-insensitively,
    because a folder name differing only in case confuses people and case-insensitive file systems)."""
    lowered = {name.lower() for name in taken}
    candidate, n = slug, 1
    while candidate.lower() in lowered:
        n += 1
        candidate = f"{slug}_{n}"
    return candidate


def dotenv_line(name: str, value: str) -> str:
    """``NAME='value'`` for a task's .env: single quotes, so python-dotenv expands nothing (cron does not)."""
    return f"{name}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def mailto_url(mailto: str) -> str | None:
    """cron's MAILTO as an Apprise URL through the local mail server (cron hands mail to the local MTA);
    a bare user name is a local mailbox (``paul`` -> ``paul@localhost``). None when MAILTO is empty."""
    addresses = [a.strip() for a in mailto.split(",") if a.strip()]
    if not addresses:
        return None
    full = [a if "@" in a else f"{a}@localhost" for a in addresses]
    return "mailto://localhost?to=" + ",".join(full)
