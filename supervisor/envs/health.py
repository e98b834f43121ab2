"""Is a built env's interpreter still there? (A distro upgrade or a pyenv removal deletes it under the env.)

Policy: an env is broken when its ``bin/python`` no longer resolves to an existing file, or when the base
interpreter folder its ``pyvenv.cfg`` names (``home = ...``) is gone. The check is two stats and one small
read, cheap enough for the loop thread at every key check. What to do about a broken env (rebuild it once)
is the caller's policy; see ``HealPolicy``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PYVENV_CFG = "pyvenv.cfg"
_MAX_CFG_BYTES = 64 * 1024


def pyvenv_home(env_dir: Path) -> Path | None:
    """The ``home`` key of the env's pyvenv.cfg (the base interpreter's folder); None when unreadable."""
    try:
        with open(env_dir / PYVENV_CFG, "rb") as handle:
            text = handle.read(_MAX_CFG_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "home" and value.strip():
            return Path(value.strip())
    return None


def env_interpreter_problem(env_dir: Path) -> str | None:
    """Why the env at ``env_dir`` cannot start its interpreter, or None when it looks runnable."""
    python = env_dir / "bin" / "python"
    if not python.exists():  # follows the symlink chain to the base interpreter
        if python.is_symlink():
            return f"its interpreter {python} points to {os.path.realpath(python)}, which is gone"
        return f"its interpreter {python} is missing"
    home = pyvenv_home(env_dir)
    if home is not None and not home.is_dir():
        return f"the base interpreter folder {home} named in {env_dir / PYVENV_CFG} is gone"
    return None


@dataclass
class HealPolicy:
    """Rebuild a broken env once: a second breakage of the same key before a good build is not retried.

    ``should_rebuild(key)`` is True the first time a key is found broken; ``rebuilt(key)`` after a successful
    build makes a later breakage (the next upgrade, months on) healable again. Owned by the loop thread.
    """

    _tried: set[str] = field(default_factory=set)

    def should_rebuild(self, key: str) -> bool:
        if key in self._tried:
            return False
        self._tried.add(key)
        return True

    def rebuilt(self, key: str) -> None:
        self._tried.discard(key)
