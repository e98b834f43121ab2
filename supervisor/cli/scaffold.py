"""`new NAME`: create a valid task folder from a template.

Policy: a new task starts disabled (``Enabled = False`` with a comment saying how to enable it), so its
placeholder ``main()`` does not run the moment the folder appears; ``--enable`` writes ``Enabled = True``.
A name that is not a Python identifier still makes a valid task folder, but ``import Tasks.NAME.helper``
cannot name it: ``name_warning`` says so.
"""

from __future__ import annotations

import keyword
from pathlib import Path

from ..errors import TaskAutomationError
from ..paths import CONFIG_FILE, MAIN_FILE, OUTPUT_DIR, REQUIREMENTS_FILE, Paths

MAIN_TEMPLATE = '''"""Task {name}: what it does, in one line."""

import os
from pathlib import Path

OUTPUT = Path(os.environ.get("TASK_OUTPUT_DIR", Path(__file__).parent / "Output"))


def initialize():
    """Runs once when the task is loaded; the returned string goes to the log."""
    OUTPUT.mkdir(exist_ok=True)
    return "{name} ready"


def main():
    """Runs at every due time in the task's own virtualenv; the returned string goes to the log."""
    return "nothing to do yet"
'''

CONFIG_TEMPLATE = """[Frequency]
; minutes between the starts of two runs (fractions allowed: 0.5 = 30 s)
EveryXMinutes = 60
; window in which a run may start; 22:00-02:00 crosses midnight
AllowedFrom = 00:00
AllowedTo = 23:59

[Global]
{enabled_comment}Enabled = {enabled}
; True: log a confirmation at each due time instead of running main()
Testing = False
RunOnStartup = False

[Limits]
TimeoutSeconds = 3600
KillGraceSeconds = 10
"""

REQUIREMENTS_TEMPLATE = "# one requirement per line, anything `pip install -r` accepts\n"


DISABLED_COMMENT = (
    "; the task is created disabled so its placeholder main() does not run yet:\n"
    "; set Enabled = True when main() is ready (a running supervisor picks the change up)\n"
)


def name_warning(name: str) -> str | None:
    """Why ``name`` is a poor task name, or None. Only identifiers can be imported (``Tasks.NAME.module``)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return None
    return (
        f"{name!r} is not a Python identifier: its helper modules cannot be imported as "
        f"`import Tasks.{name}.module` (use letters, digits and _, e.g. {_suggest(name)!r})"
    )


def _suggest(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "task"
    return f"task_{cleaned}" if cleaned[0].isdigit() else cleaned


def create_task(paths: Paths, name: str, *, enable: bool = False) -> Path:
    if not name or name != name.strip() or "/" in name or name.startswith(".") or name in ("..", "__pycache__"):
        raise TaskAutomationError(f"{name!r} is not a valid task folder name")
    folder = paths.task_dir(name)
    if folder.exists():
        raise TaskAutomationError(f"{folder} already exists")
    paths.tasks.mkdir(parents=True, exist_ok=True)
    # Write into a hidden sibling, then rename: the running supervisor never sees a half-written folder.
    staging = paths.tasks / f".new-{name}"
    (staging / OUTPUT_DIR).mkdir(parents=True)
    (staging / MAIN_FILE).write_text(MAIN_TEMPLATE.format(name=name))
    (staging / CONFIG_FILE).write_text(
        CONFIG_TEMPLATE.format(
            enabled="True" if enable else "False", enabled_comment="" if enable else DISABLED_COMMENT
        )
    )
    (staging / REQUIREMENTS_FILE).write_text(REQUIREMENTS_TEMPLATE)
    staging.rename(folder)
    return folder
