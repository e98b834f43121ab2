"""Task secrets: ``HOME/.env`` and ``Tasks/NAME/.env`` (python-dotenv syntax), and the masker that keeps them
out of everything the supervisor writes.

Policy (README, "Being told"):

- Both files are optional. The home's file applies to every task; a task's own file wins key by key.
- The values reach ``initialize()`` and every run as environment variables, never the supervisor log: messages
  here name files, line numbers and variable *names* only.
- A ``.env`` readable by group or others is a warning naming the file (the secrets are used anyway: refusing
  them would turn a permissions slip into a failing task at 3 a.m.). A line python-dotenv cannot parse is a
  warning naming the file and the line; an unreadable, non-UTF-8, oversized or non-regular file (a FIFO) is a
  warning and contributes nothing.
- Every value of ``MIN_MASKED_LENGTH`` or more characters is replaced by ``***`` wherever the supervisor writes
  text (task logs, history messages, notices, pings). Shorter values (``1``, ``true``, ``8080``) are not
  secrets worth hiding and masking them would garble ordinary output.
"""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .. import safefile

MIN_MASKED_LENGTH = 6
MASK = "***"
MAX_ENV_FILE_BYTES = 1024 * 1024  # a .env larger than this is a mistake, not a list of secrets


class Masker:
    """Replaces every secret value in a text with ``***``.

    One compiled alternation, longest value first, so a secret that contains another is masked whole and a
    long log costs one regex pass instead of one pass per secret.
    """

    def __init__(self, values: Iterable[str]) -> None:
        secrets = sorted({v for v in values if len(v) >= MIN_MASKED_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in secrets)) if secrets else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)


NO_MASKER = Masker(())


@dataclass(frozen=True)
class Secrets:
    """The variables a task's processes get from the .env files, and warnings for the supervisor log."""

    values: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # Values of the home file that the task's file overrode: not in the task's environment, still masked.
    shadowed: tuple[str, ...] = ()

    def masker(self) -> Masker:
        return Masker([*self.values.values(), *self.shadowed])


def read_env_file(path: Path, *, task: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The variables of one .env file and the warnings about it; a missing file is ({}, []).

    Read through the one safe reader for user files (regular files only, non-blocking, size-capped), so a
    FIFO or a huge file planted as .env cannot hang or flood the loop.
    """
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    owner = f"task '{task}': " if task is not None else ""
    where = f"{owner}{path}"
    warnings: list[str] = []
    try:
        info = safefile.check_regular(path)
        text = safefile.read_text(path, max_bytes=MAX_ENV_FILE_BYTES)
    except FileNotFoundError:
        return {}, []
    except safefile.UnsafeFileError as exc:
        return {}, [f"{owner}{exc}; none of its secrets are used"]
    except OSError as exc:
        return {}, [f"{where}: cannot read secrets: {exc.strerror or exc}; none of them are used"]
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(
            f"{where}: readable by group/others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"it holds secrets: chmod 600 {path}"
        )
    bad = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
    if bad:
        lines = ", ".join(str(n) for n in bad)
        warnings.append(f"{where}: line {lines}: not 'NAME=value' (python-dotenv syntax); skipped")
    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    return values, warnings


def load_secrets(home_env: Path, task_env: Path | None = None, *, task: str | None = None) -> Secrets:
    """Merge the home's .env and the task's .env (the task's wins, key by key)."""
    home_values, warnings = read_env_file(home_env)
    values = dict(home_values)
    shadowed: list[str] = []
    if task_env is not None:
        task_values, task_warnings = read_env_file(task_env, task=task)
        warnings.extend(task_warnings)
        shadowed = [home_values[k] for k in task_values if k in home_values and home_values[k] != task_values[k]]
        values.update(task_values)
    return Secrets(values=values, warnings=tuple(warnings), shadowed=tuple(shadowed))


class SecretStore:
    """Each task's secrets for the supervisor, re-read only when a .env file changed.

    The loop asks before every ``initialize()`` and run, so an edited ``.env`` applies to the next run without
    a reload (the watcher ignores hidden files on purpose). A stat signature (inode, size, mtime) of both files
    decides whether to read again; a warning is logged when it first appears, not once per run.
    """

    def __init__(self, home_env: Path, task_env: Callable[[str], Path], *, warn: Callable[[str], None]) -> None:
        self._home_env = home_env
        self._task_env = task_env
        self._warn = warn
        self._cache: dict[str, tuple[tuple[object, ...], Secrets, Masker]] = {}

    def get(self, task: str) -> tuple[Secrets, Masker]:
        """The task's secrets and their masker (the same objects until a file changes)."""
        signature = (_signature(self._home_env), _signature(self._task_env(task)))
        cached = self._cache.get(task)
        if cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        secrets = load_secrets(self._home_env, self._task_env(task), task=task)
        already = cached[1].warnings if cached is not None else ()
        for warning in secrets.warnings:
            if warning not in already:  # a file that changed but is still world-readable is not news
                self._warn(warning)
        masker = secrets.masker()
        self._cache[task] = (signature, secrets, masker)
        return secrets, masker


def _signature(path: Path) -> tuple[object, ...]:
    try:
        info = os.stat(path)
    except OSError:
        return ()
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode)
