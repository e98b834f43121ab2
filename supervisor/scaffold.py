"""`new NAME`: create a valid task folder from a template."""

from __future__ import annotations

from pathlib import Path

from .errors import TaskAutomationError
from .paths import CONFIG_FILE, MAIN_FILE, OUTPUT_DIR, REQUIREMENTS_FILE, Paths

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
Enabled = True
; True: log a confirmation at each due time instead of running main()
Testing = False
RunOnStartup = False

[Limits]
TimeoutSeconds = 3600
KillGraceSeconds = 10
"""

REQUIREMENTS_TEMPLATE = "# one requirement per line, anything `pip install -r` accepts\n"


def create_task(paths: Paths, name: str) -> Path:
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
    (staging / CONFIG_FILE).write_text(CONFIG_TEMPLATE)
    (staging / REQUIREMENTS_FILE).write_text(REQUIREMENTS_TEMPLATE)
    staging.rename(folder)
    return folder
