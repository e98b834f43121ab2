"""DiskUsage: records how full the disk holding this home is, as a CSV row every 30 minutes.

Uses a helper module next to main.py, imported the way the original tool documented:
``import Tasks.DiskUsage.units``.
"""

import csv
import os
import shutil
from datetime import datetime
from pathlib import Path

import Tasks.DiskUsage.units as units

OUTPUT = Path(os.environ.get("TASK_OUTPUT_DIR", Path(__file__).parent / "Output"))
CSV = OUTPUT / "disk_usage.csv"


def initialize():
    OUTPUT.mkdir(exist_ok=True)
    if not CSV.exists():
        with open(CSV, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(["time", "total", "used", "free", "percent_used"])
    return f"recording disk usage of {Path.cwd()} into {CSV}"


def main():
    usage = shutil.disk_usage(Path.cwd())
    percent = 100 * usage.used / usage.total
    with open(CSV, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([datetime.now().isoformat(timespec="seconds"), usage.total, usage.used,
                                usage.free, f"{percent:.1f}"])
    return f"{units.human(usage.used)} used of {units.human(usage.total)} ({percent:.1f} %)"
