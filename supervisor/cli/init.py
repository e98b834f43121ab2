"""``init [DIR]``: make a folder a home, anywhere.

Policy (docs/cli.md, "init"):

- The folder is DIR, else ``--home``, else ``$TASKAUTOMATION_HOME``, else the current folder; it is created
  when missing (with its parents).
- It gets ``Tasks/`` with one example task, created disabled (``new``'s template), and a
  ``taskautomation.ini`` whose every key is commented out with its default and what it does.
- Nothing that exists is overwritten: in a folder that is already a home (it holds ``Tasks/``), ``init``
  only adds a missing ``taskautomation.ini`` and says what it left alone.
- It ends with the commands to run next, spelled for this folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import TaskAutomationError
from ..paths import HOME_ENV_VAR, Paths
from .scaffold import create_task
from .templates import read_template

EXAMPLE_TASK = "example"


def home_config_template() -> str:
    """The commented-out taskautomation.ini (package data, so an installed tool has it too)."""
    return read_template("taskautomation.ini.tmpl")


def init_home(folder: Path) -> list[str]:
    """Create what a home needs in ``folder``; one line per thing made or left alone."""
    paths = Paths(folder)
    done: list[str] = []
    if folder.exists() and not folder.is_dir():
        raise TaskAutomationError(f"{folder} exists and is not a folder")
    already = paths.tasks.is_dir()
    try:
        paths.tasks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TaskAutomationError(f"cannot create {paths.tasks}: {exc.strerror or exc}") from exc
    if already:
        done.append(f"{paths.tasks} exists: left as it is")
    else:
        example = create_task(paths, EXAMPLE_TASK, enable=False)
        done.append(f"created {paths.tasks} with one example task, disabled: {example}")
    if paths.home_config.exists():
        done.append(f"{paths.home_config} exists: left as it is")
    else:
        paths.home_config.write_text(home_config_template(), encoding="utf-8")
        done.append(f"created {paths.home_config} (every key commented out, with its default)")
    return done


def next_steps(folder: Path, *, cwd: Path) -> list[str]:
    """The commands to run next; ``--home`` is spelled out unless the home is the current folder."""
    here = folder == cwd.resolve()
    home = "" if here else f" --home {folder}"
    steps = [
        (f"taskautomation import-crontab{home}", "your crontab's jobs, one task each (created disabled)"),
        (f"taskautomation new NAME{home}", "a task of your own, from a template"),
        (f"taskautomation validate{home}", "check every task folder without running anything"),
        (f"taskautomation run{home}", "run the supervisor in the foreground (Ctrl-C stops it)"),
        (f"taskautomation install-systemd --user --enable{home}", "or as a service that starts at boot"),
    ]
    width = max(len(command) for command, _ in steps)
    intro = "next:" if here else f"next (or cd {folder}, or export {HOME_ENV_VAR}={folder}, and drop --home):"
    return [intro] + [f"  {command.ljust(width)}  # {what}" for command, what in steps]


def cmd_init(args: argparse.Namespace) -> int:
    given = args.dir or getattr(args, "home", None) or os.environ.get(HOME_ENV_VAR) or "."
    cwd = Path.cwd()
    folder = (cwd / Path(given).expanduser()).resolve()
    for line in init_home(folder):
        print(line)
    for line in next_steps(folder, cwd=cwd):
        print(line)
    return 0
