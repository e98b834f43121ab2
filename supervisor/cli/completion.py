"""``completion bash|zsh|fish``: shell completion for ``taskautomation``, by argcomplete.

Policy (docs/cli.md, "Shell completion"):

- The script the command prints is argcomplete's own for that shell (argcomplete writes bash, zsh and fish
  scripts alike; shtab has no fish). It is small and calls ``taskautomation`` back on each Tab, so what it
  completes always matches the installed version: commands, options, option values with fixed choices, and
  the task names of the home the command line would use.
- Task names are the folders in ``Tasks/`` of the home chosen exactly as the command would choose it
  (``--home`` on the line being completed, ``$TASKAUTOMATION_HOME``, or the current folder if it is a home);
  no home, no names. Hidden folders are not tasks and are not offered.
- Completion costs nothing unless the shell asks: argcomplete is imported only when its environment
  variable says a completion is being computed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import TaskAutomationError
from .home import choose_home

SHELLS = ("bash", "zsh", "fish")
PROGRAM = "taskautomation"
# The commands whose NAME is a task that exists (``new NAME`` names one that does not yet).
_NAME_IS_A_TASK = ("history", "run-now", "logs", "validate", "notify-test", "next", "pause", "resume")


def task_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The task folders of the home the command would use whose names start with ``prefix``."""
    try:
        choice = choose_home(getattr(parsed_args, "home", None), environ=os.environ, cwd=Path.cwd(), default=None)
        tasks = choice.path / "Tasks"
        names = sorted(p.name for p in tasks.iterdir() if p.is_dir() and not p.name.startswith("."))
    except (TaskAutomationError, OSError):
        return []
    return [name for name in names if name.startswith(prefix)]


def complete_if_asked(parser: argparse.ArgumentParser) -> None:
    """When the shell is computing a completion, answer it and exit; otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in sub.choices.items():
        if command in _NAME_IS_A_TASK:
            for action in subparser._actions:
                if action.dest == "name":
                    action.completer = task_names  # type: ignore[attr-defined]  # argcomplete reads this attribute
    argcomplete.autocomplete(parser, always_complete_options=False)  # options once a word starts with -


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode([PROGRAM], shell=args.shell), end="")
    return 0
