"""Inline script metadata (PEP 723): a ``# /// script`` block in a task's main.py instead of requirements.txt.

Policy:

- A main.py may declare ``dependencies`` (a list of PEP 508 requirements) and ``requires-python`` (a version
  specifier) in one ``# /// script`` block. With no requirements.txt, those dependencies are what the task's
  env gets (they take the place of the requirements lines, so they are part of the env key).
- A block *and* a requirements.txt is an error naming both files: two sources of truth would silently
  disagree. More than one ``script`` block is an error too (the PEP says so).
- An unmet ``requires-python`` is an error naming the base interpreter and its version; it is checked before
  anything is built.
- Other blocks (``# /// pyproject`` ...) and ``[tool]`` tables are ignored.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from .. import safefile
from ..errors import ConfigError
from ..safefile import UnsafeFileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package depends on tomli there
    import tomli as tomllib

BLOCK_TYPE = "script"
# The reference expression of the specification: a '# /// TYPE' line, comment lines, a '# ///' line.
_BLOCK_RE = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


@dataclass(frozen=True)
class ScriptMetadata:
    """What a ``# /// script`` block declares."""

    dependencies: tuple[str, ...] = ()
    requires_python: str | None = None


def _error(where: Path, task: str, key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"task {task!r}: {where}: '# /// script' block: {key} = {value!r}: {problem}")


def parse_script_metadata(source: str, *, where: Path, task: str) -> ScriptMetadata | None:
    """The ``script`` block of ``source`` (main.py's text), or None when it has none.

    Raises ConfigError naming the task, the file, the block, the key and the bad value.
    """
    blocks = [m for m in _BLOCK_RE.finditer(source) if m.group("type") == BLOCK_TYPE]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise ConfigError(f"task {task!r}: {where}: more than one '# /// script' block; keep one")
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:] for line in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        data: dict[str, Any] = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"task {task!r}: {where}: '# /// script' block is not valid TOML: {exc}") from None
    dependencies = data.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise _error(where, task, "dependencies", dependencies, "must be a list of strings")
    for dependency in dependencies:
        try:
            Requirement(dependency)
        except InvalidRequirement as exc:
            raise _error(where, task, "dependencies", dependency, f"not a valid requirement ({exc})") from None
    requires = data.get("requires-python")
    if requires is not None:
        if not isinstance(requires, str):
            raise _error(where, task, "requires-python", requires, "must be a string such as '>=3.10'")
        try:
            SpecifierSet(requires)
        except InvalidSpecifier:
            raise _error(where, task, "requires-python", requires, "not a version specifier") from None
    return ScriptMetadata(dependencies=tuple(d.strip() for d in dependencies), requires_python=requires)


def check_requires_python(meta: ScriptMetadata, *, python_version: str, python: Path, where: Path, task: str) -> None:
    """Raise ConfigError when the base interpreter's version does not satisfy ``requires-python``."""
    if meta.requires_python is None:
        return
    if not SpecifierSet(meta.requires_python).contains(Version(python_version), prereleases=True):
        raise _error(
            where,
            task,
            "requires-python",
            meta.requires_python,
            f"not met by the base interpreter {python} (Python {python_version}); run the supervisor "
            f"with a matching Python or relax the specifier",
        )


def read_source(main_py: Path, *, task: str) -> str | None:
    """main.py's text for the block search; None when it does not exist. Read the safe way (regular files
    only, never blocking, main.py's size cap): an unsafe main.py is a ConfigError naming it."""
    try:
        raw = safefile.read_bytes(main_py, max_bytes=safefile.CODE_MAX_BYTES)
    except FileNotFoundError:
        return None
    except UnsafeFileError as exc:
        raise ConfigError(f"task {task!r}: {exc}") from None
    return raw.decode("utf-8", errors="surrogateescape")


def script_requirements(
    requirements: Path, *, main_py: Path, task: str, python_version: str, python: Path
) -> tuple[str, ...] | None:
    """The requirement lines main.py's block supplies, or None when requirements.txt (or nothing) decides.

    Raises ConfigError for a block next to a requirements.txt, an invalid block or an unmet requires-python.
    """
    source = read_source(main_py, task=task)
    meta = parse_script_metadata(source, where=main_py, task=task) if source is not None else None
    if meta is None:
        return None
    if requirements.exists():
        raise ConfigError(
            f"task {task!r}: both {requirements} and a '# /// script' block in {main_py} are "
            f"present; keep one of them (the block's dependencies or requirements.txt)"
        )
    check_requires_python(meta, python_version=python_version, python=python, where=main_py, task=task)
    return meta.dependencies


def check_task_block(task_dir: Path, *, task: str, python_version: str, python: Path) -> list[str]:
    """``validate``: the problems of a task's script block (none when it has no block or a valid one)."""
    try:
        script_requirements(
            task_dir / "requirements.txt",
            main_py=task_dir / "main.py",
            task=task,
            python_version=python_version,
            python=python,
        )
    except ConfigError as exc:
        return [str(exc)]
    return []
