"""Which HOME a command works on, and whether that folder is usable (docs/cli.md, "The home").

Policy, first match wins:

1. ``--home DIR``;
2. ``$TASKAUTOMATION_HOME`` (an empty value counts as unset);
3. the entry point's own folder, for ``main.py`` and ``terminate.py`` (the seed's behaviour);
4. for ``python3 -m supervisor`` / ``taskautomation``: the current folder, but **only if it is a home**, i.e.
   holds ``Tasks/``. Anything else is an error: a command run from the wrong folder must not answer for a
   home nobody uses (an empty status table, exit 0) while the real supervisor runs elsewhere.

A chosen home that does not exist is an error, except for the commands that create it (``run``, ``new``),
which say that they did. A home that is a file is always an error. Every error is one line naming the
folder and where the choice came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import TaskAutomationError
from ..paths import HOME_ENV_VAR

HINT = f"name one with --home DIR or {HOME_ENV_VAR}=DIR (a home is the folder that holds Tasks/)"


class HomeError(TaskAutomationError):
    """No usable home: none found, missing, or not a folder."""


@dataclass(frozen=True)
class HomeChoice:
    """A home and where the choice came from (for messages: "from --home", "from TASKAUTOMATION_HOME")."""

    path: Path
    source: str


def choose_home(given: str | None, *, environ: Mapping[str, str], cwd: Path, default: Path | None) -> HomeChoice:
    """Apply the policy above; raise HomeError when nothing names a home.

    ``default`` is the entry point's own folder (main.py, terminate.py), None for the general CLI.
    """
    if given is not None:
        return HomeChoice(_absolute(given, cwd), "--home")
    from_env = environ.get(HOME_ENV_VAR, "")
    if from_env:
        return HomeChoice(_absolute(from_env, cwd), HOME_ENV_VAR)
    if default is not None:
        return HomeChoice(default.resolve(), "the folder of the script")
    if (cwd / "Tasks").is_dir():
        return HomeChoice(cwd.resolve(), "the current folder")
    raise HomeError(
        f"no home found: the current folder {cwd} has no Tasks/ folder and {HOME_ENV_VAR} is not set; {HINT}"
    )


def _absolute(text: str, cwd: Path) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else cwd / path).resolve()


def ensure_home(choice: HomeChoice, *, may_create: bool) -> str | None:
    """Check that the chosen home is a folder; create it when allowed. Returns a note when it was created."""
    path = choice.path
    if path.is_dir():
        return None
    if path.exists():
        raise HomeError(f"home {path} (from {choice.source}) is not a folder; {HINT}")
    if not may_create:
        raise HomeError(
            f"home {path} (from {choice.source}) does not exist; {HINT}, or create it with `new NAME --home {path}`"
        )
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise HomeError(
            f"home {path} (from {choice.source}) does not exist and cannot be created: {exc.strerror or exc}"
        ) from exc
    return f"created the home {path} (from {choice.source})"
