"""`next NAME [--count N] [--from TIME] [--json]`: a task's next due times, offline.

Reads only the task's config.ini (no supervisor, no history): the times are what the loop would do for a
task that never ran, from now or from ``--from``, with the task's zone, window and jitter applied, because
both go through ``triggers.trigger_for``. An After task has none: it prints its upstreams ("after backup
(ok)"). Times are shown in the task's zone with their UTC offset.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone, tzinfo

from ..config.schema import read_task_config
from ..errors import TaskAutomationError
from ..model import TaskSpec
from ..paths import Paths
from ..query.timefmt import relative
from ..scheduling.triggers import trigger_for, upcoming, zone_for
from ..scheduling.windows import local_zone

MAX_COUNT = 100_000  # the options themselves are in cliargs.py


def cmd_next(args: argparse.Namespace, paths: Paths) -> int:
    if not 1 <= args.count <= MAX_COUNT:
        raise TaskAutomationError(f"--count {args.count}: must be between 1 and {MAX_COUNT}")
    folder = paths.task_dir(args.name)
    if not folder.is_dir():
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks}")
    spec = read_task_config(folder / "config.ini", task=args.name).spec
    machine = local_zone()
    zone = zone_for(spec, default=machine)
    now = datetime.now(timezone.utc)
    start = now if args.start is None else parse_instant(args.start, tz=zone)
    times = next_times(spec, now=start, count=args.count, tz=machine)
    if args.json:
        shown = [t.astimezone(zone).isoformat() for t in times]
        extra = {"after": list(spec.after), "after_outcome": spec.after_outcome.value} if spec.after else {}
        print(json.dumps({"task": spec.name, "next": shown, **extra}))
        return 0
    for line in render(spec, times, reference=start, zone=zone, machine=machine):
        print(line)
    return 0


def next_times(spec: TaskSpec, *, now: datetime, count: int, tz: tzinfo) -> list[datetime]:
    """The next ``count`` due times of ``spec`` from ``now`` as if it never ran (``tz`` = machine zone)."""
    return upcoming(trigger_for(spec, tz=tz), now=now, count=count)


def parse_instant(text: str, *, tz: tzinfo) -> datetime:
    """``--from``: ISO 8601; a time without an offset is a wall-clock time in ``tz``."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TaskAutomationError(
            f"--from {text!r}: not a date-time (use ISO 8601, e.g. 2026-03-28T12:00 or 2026-03-28T12:00+01:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(timezone.utc)


def render(spec: TaskSpec, times: list[datetime], *, reference: datetime, zone: tzinfo, machine: tzinfo) -> list[str]:
    """The human table: absolute time with offset, and how long from ``reference`` (like list-timers)."""
    lines = [f"{spec.name}: {trigger_for(spec, tz=machine).describe()}"]
    if not times:
        lines.append(
            "no due times of its own: it runs when a run of an upstream ends" if spec.after else "no more runs"
        )
        return lines
    rows = [("NEXT", "LEFT")] + [
        (f"{t.astimezone(zone):%a %Y-%m-%d %H:%M:%S %z}", relative(t - reference)) for t in times
    ]
    width = max(len(row[0]) for row in rows)
    lines.extend(f"{a.ljust(width)}  {b}" for a, b in rows)
    return lines
