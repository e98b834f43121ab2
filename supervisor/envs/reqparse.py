"""Requirements text, as pip and uv read it (pure): normalised lines, ``-r``/``-c`` includes, and whether a
file depends on the folder it is installed from.

The env key (envs.py) and ``validate`` (reqcheck.py) read requirements through these rules, so both agree on
which lines matter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

_COMMENT_RE = re.compile(r"(^|\s+)#.*$")  # pip's rule: '#' starts a comment at line start or after whitespace
# Options whose value is a file path or a location that may be a local folder.
_PATH_OPTIONS = frozenset(
    {
        "-r",
        "--requirement",
        "-c",
        "--constraint",
        "-e",
        "--editable",
        "-f",
        "--find-links",
        "-i",
        "--index-url",
        "--extra-index-url",
    }
)
_INCLUDE_OPTIONS = frozenset({"-r", "--requirement", "-c", "--constraint"})
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def normalize_requirements(text: str) -> tuple[str, ...]:
    """The lines of a requirements file that matter, in order.

    Continuation lines (trailing backslash) are joined, comments and blank lines dropped, surrounding
    whitespace stripped. Order is kept: it can matter to the installer (options, ``-r`` includes).
    """
    return tuple(line for _, line in numbered_requirements(text))


def numbered_requirements(text: str) -> tuple[tuple[int, str], ...]:
    """``normalize_requirements`` with the number (from 1) of the physical line each logical line starts on."""
    joined: list[tuple[int, str]] = []
    pending, first, continuing = "", 0, False
    for number, raw in enumerate(text.splitlines(), start=1):
        if not continuing:
            first = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continuing = True
            continue
        joined.append((first, pending + raw))
        pending, continuing = "", False
    if continuing:
        joined.append((first, pending))
    lines = ((number, _COMMENT_RE.sub("", line).strip()) for number, line in joined)
    return tuple((number, line) for number, line in lines if line)


def _split_option(token: str) -> tuple[str, str | None]:
    """``--find-links=wheels`` -> (``--find-links``, ``wheels``); ``-rother.txt`` -> (``-r``, ``other.txt``)."""
    if token.startswith("--"):
        name, sep, value = token.partition("=")
        return name, value if sep else None
    if len(token) > 2:
        return token[:2], token[2:].lstrip("=")
    return token, None


def _option_values(line: str) -> list[tuple[str, str]]:
    """(option, value) pairs for the path-taking options on one normalised line."""
    tokens = line.split()
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("-"):
            continue
        name, value = _split_option(token)
        if name not in _PATH_OPTIONS:
            continue
        if value is None and index < len(tokens):
            value = tokens[index]
            index += 1
        if value:
            pairs.append((name, value))
    return pairs


def _is_relative_location(value: str) -> bool:
    """True when an option value (a path or URL) is a path relative to the current directory."""
    if value.startswith("file:"):
        return not value[len("file:") :].startswith("/")  # file:///abs and file:/abs are absolute
    if "://" in value:
        return False
    return not value.startswith(("/", "~", "$"))  # ~ and $VAR do not depend on the task folder


def _looks_like_relative_path(token: str) -> bool:
    """True when a requirement token (not an option value) names a relative local path, as pip would read it."""
    if token.startswith("file:"):
        return not token[len("file:") :].startswith("/")
    if "://" in token or token.startswith(("/", "~", "$")):
        return False
    return token.startswith(".") or "/" in token or token.lower().endswith(_ARCHIVE_SUFFIXES)


def references_relative_path(lines: Sequence[str]) -> bool:
    """True when any normalised requirements line depends on the directory it is installed from.

    Deliberately generous: a false positive only costs sharing the env with other tasks, while a false
    negative would let two folders share an env built from the wrong local files.
    """
    for line in lines:
        if line.startswith("-"):
            if any(_is_relative_location(value) for _, value in _option_values(line)):
                return True
            continue
        # A requirement, possibly 'name @ url' and '; markers' (markers never hold paths).
        requirement = line.split(";", 1)[0] if " @ " not in line else line.split(" ;", 1)[0]
        if any(_looks_like_relative_path(token) for token in requirement.split()):
            return True
    return False


def included_files(lines: Sequence[str], *, base_dir: Path) -> list[Path]:
    """Files pulled in by ``-r``/``-c`` lines, resolved the way pip and uv do (relative to the including file)."""
    found: list[Path] = []
    for line in lines:
        if not line.startswith("-"):
            continue
        for name, value in _option_values(line):
            if name in _INCLUDE_OPTIONS and "://" not in value:
                path = Path(os.path.expandvars(value)).expanduser()
                found.append(path if path.is_absolute() else base_dir / path)
    return found
