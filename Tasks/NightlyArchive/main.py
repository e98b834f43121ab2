"""NightlyArchive: once a night, between 02:00 and 04:00, zips the other tasks' Output folders.

Shows a windowed daily task, like the original SpotifyBackup example (which needs a network account).
"""

import os
import zipfile
from datetime import datetime
from pathlib import Path

OUTPUT = Path(os.environ.get("TASK_OUTPUT_DIR", Path(__file__).parent / "Output"))
TASKS = Path(os.environ.get("TASK_DIR", Path(__file__).parent)).parent
KEEP = 7  # archives kept; older ones are deleted


def initialize():
    OUTPUT.mkdir(exist_ok=True)
    return f"archiving the Output folders under {TASKS} into {OUTPUT}"


def main():
    archive = OUTPUT / f"outputs-{datetime.now():%Y%m%d-%H%M%S}.zip"
    files = 0
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for task in sorted(TASKS.iterdir()):
            out = task / "Output"
            if task.name == Path(os.environ.get("TASK_DIR", "")).name or not out.is_dir():
                continue
            for path in out.rglob("*"):
                if path.is_file() and path.name != ".gitkeep":
                    zf.write(path, path.relative_to(TASKS))
                    files += 1
    for old in sorted(OUTPUT.glob("outputs-*.zip"))[:-KEEP]:
        old.unlink()
    return f"archived {files} file(s) into {archive.name}"
