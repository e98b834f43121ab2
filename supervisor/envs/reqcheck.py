"""Checking a requirements.txt line by line, by pip's rules, without installing anything.

Policy (the rules pip applies to a requirements file, pip/_internal/req/req_file.py):

* Lines are joined (trailing backslash), comments and blanks dropped as ``reqparse.normalize_requirements``
  does; a problem names the physical line the logical line starts on.
* A line is cut at its first token that starts with ``-``: before it the requirement, from it the options.
* Options are parsed with optparse against the options pip accepts in a requirements file (``-r``, ``-c``,
  ``-e``, ``-i/--index-url``, ``--extra-index-url``, ``--no-index``, ``-f/--find-links``, ``--no-binary``,
  ``--only-binary``, ``--prefer-binary``, ``--require-hashes``, ``--pre``, ``--trusted-host``,
  ``--use-feature``; per requirement ``--hash``, ``--global-option``, ``-C/--config-settings``). An unknown
  option, a missing value, or a stray word after the options is an error (pip would ignore the word; it is
  always a mistake).
* A requirement is a URL (``scheme://…``, ``file:…``), a local path (it holds ``/``, starts with ``.`` or
  ``~``, or names an archive), or a PEP 508 requirement parsed by ``packaging``: ``requests>=``,
  ``foo bar baz`` and ``numpy==1.26.*.x`` are errors.
* ``${VAR}`` is expanded from the environment first, as pip does. Files pulled in with ``-r``/``-c`` must
  exist and are checked the same way (relative to the including file; at most ``MAX_DEPTH`` deep).
* Every file is read through ``safefile`` (regular files only, size-capped, never blocking).
"""

from __future__ import annotations

import optparse
import os
import re
import shlex
from pathlib import Path
from typing import Mapping, NoReturn

from packaging.requirements import InvalidRequirement, Requirement

from .. import safefile
from ..safefile import UnsafeFileError
from .reqparse import numbered_requirements

MAX_DEPTH = 10
_ENV_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")  # pip expands only this form
_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
# (flags, takes a value) of every option pip accepts in a requirements file.
_OPTIONS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("-i", "--index-url"), True),
    (("--extra-index-url",), True),
    (("--no-index",), False),
    (("-c", "--constraint"), True),
    (("-r", "--requirement"), True),
    (("-e", "--editable"), True),
    (("-f", "--find-links"), True),
    (("--no-binary",), True),
    (("--only-binary",), True),
    (("--prefer-binary",), False),
    (("--require-hashes",), False),
    (("--pre",), False),
    (("--trusted-host",), True),
    (("--use-feature",), True),
    (("--no-deps-for",), True),
    (("--hash",), True),
    (("--global-option",), True),
    (("-C", "--config-settings"), True),
)


class _OptionError(Exception):
    pass


class _Parser(optparse.OptionParser):
    def error(self, msg: str) -> NoReturn:  # optparse would print the usage and exit
        raise _OptionError(msg)


def _parser() -> _Parser:
    parser = _Parser(add_help_option=False)
    for flags, takes_value in _OPTIONS:
        parser.add_option(
            *flags, dest=flags[-1].lstrip("-").replace("-", "_"), action="append" if takes_value else "store_true"
        )
    return parser


def split_line(line: str) -> tuple[str, str]:
    """(requirement part, options part): the line is cut at its first token starting with ``-``."""
    tokens = line.split(" ")
    for index, token in enumerate(tokens):
        if token.startswith("-"):
            return " ".join(tokens[:index]).strip(), " ".join(tokens[index:])
    return line.strip(), ""


def _looks_like_location(text: str) -> bool:
    if "://" in text or text.startswith("file:"):
        return True
    first = text.split(";", 1)[0].strip()
    return "/" in first or first.startswith((".", "~")) or first.lower().endswith(_ARCHIVES)


def check_requirement(text: str) -> str | None:
    """None when ``text`` is something pip installs from; else why not, in one line."""
    if _looks_like_location(text):
        return None
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        lines = str(exc).splitlines()
        where = f" (at column {lines[2].index('^') + 1 - 4})" if len(lines) >= 3 and "^" in lines[2] else ""
        return f"not a valid requirement: {lines[0] if lines else exc}{where}"
    return None


def check_options(text: str) -> tuple[str | None, list[str]]:
    """(problem or None, files named by -r/-c) for the options part of a line."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return f"cannot split the options: {exc}", []
    try:
        options, rest = _parser().parse_args(words)
    except _OptionError as exc:
        return str(exc), []
    if rest:
        return f"unexpected {' '.join(rest)!r} after the options (one requirement or option set per line)", []
    return None, [*(options.requirement or []), *(options.constraint or [])]


def check_file(path: Path, *, environ: Mapping[str, str], depth: int = 0) -> list[str]:
    """Problems in one requirements file, each ``FILE: line N: 'LINE': why``; includes are checked too."""
    try:
        text = safefile.read_text(path, max_bytes=safefile.REQUIREMENTS_MAX_BYTES)
    except FileNotFoundError:
        return [f"{path}: does not exist"]
    except UnsafeFileError as exc:  # a FIFO, a device, too large, not UTF-8...: it names the file
        return [str(exc)]
    problems: list[str] = []
    for number, raw in numbered_requirements(text):
        line = _ENV_VAR.sub(lambda m: environ.get(m.group(1), m.group(0)), raw)
        requirement, options = split_line(line)
        problem = check_requirement(requirement) if requirement else None
        includes: list[str] = []
        if problem is None and options:
            problem, includes = check_options(options)
        if problem is not None:
            problems.append(f"{path}: line {number}: {raw!r}: {problem}")
            continue
        for name in includes:
            if "://" in name:
                continue  # pip fetches those; nothing to check offline
            included = Path(os.path.expanduser(name))
            included = included if included.is_absolute() else path.parent / included
            if not included.exists():
                problems.append(f"{path}: line {number}: {raw!r}: {included} does not exist")
            elif depth >= MAX_DEPTH:
                problems.append(f"{path}: line {number}: includes nest deeper than {MAX_DEPTH} files")
            else:
                problems.extend(check_file(included, environ=environ, depth=depth + 1))
    return problems
