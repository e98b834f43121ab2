"""`next` for 1,000 cron occurrences: ours vs the bare cron library, in the same run.

* ours: ``cli_next.next_times`` (the ``next`` command without its process start): the task's trigger from
  ``triggers.trigger_for`` with its zone, window filter and jitter, then the JSON document ``next --json``
  prints. Three expressions of different density: ``*/5 * * * *``, ``30 7 * * mon-fri`` and ``0 * * * *``
  with a 08:00-18:00 window (every slot outside the window is looked at and dropped).
* baseline: the same number of occurrences straight from one ``cronsim.CronSim`` iterator in the same
  zone: the floor for anything built on this library.

Run alone with ``python -m bench.cron_next [--quick]``; ``bench/schedule.py`` includes its figures.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from cronsim import CronSim

from supervisor.cli.next import next_times
from supervisor.model import TaskSpec, Window

from .common import Settings
from .stats import Figure, interleave, ratio_of, summarize

GROUP = "schedule"
OCCURRENCES = 1000
ZONE = "Europe/Berlin"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)  # spans both 2026 DST changes for the denser expressions
CASES = (
    ("*/5 * * * *", Window()),
    ("30 7 * * mon-fri", Window()),
    ("0 * * * *", Window(clock_time(8, 0), clock_time(18, 0))),
)


def ours_ms(expression: str, window: Window) -> float:
    spec = TaskSpec(name="bench", cron=expression, window=window, time_zone=ZONE, jitter_s=30)
    zone = ZoneInfo(ZONE)
    began = time.perf_counter()
    times = next_times(spec, now=START, count=OCCURRENCES, tz=timezone.utc)
    json.dumps({"task": spec.name, "next": [t.astimezone(zone).isoformat() for t in times]})
    elapsed = (time.perf_counter() - began) * 1000
    if len(times) != OCCURRENCES:
        raise AssertionError(f"{expression}: {len(times)} of {OCCURRENCES} occurrences")
    return elapsed


def library_ms(expression: str) -> float:
    began = time.perf_counter()
    iterator = CronSim(expression, START.astimezone(ZoneInfo(ZONE)))
    for _ in range(OCCURRENCES):
        next(iterator)
    return (time.perf_counter() - began) * 1000


def run(settings: Settings) -> list[Figure]:
    rounds = int(settings.pick(3, 15))
    figures = []
    for expression, window in CASES:
        ours, base = interleave(rounds, lambda: ours_ms(expression, window), lambda: library_ms(expression))
        mine, floor = summarize(ours), summarize(base)
        where = f", window {window}" if window != Window() else ""
        figures.append(
            Figure(
                GROUP,
                f"next --count {OCCURRENCES}: cron '{expression}'{where}",
                "ms",
                mine,
                "≤ 50 ms",
                mine.median <= 50.0,
                baseline=floor,
                baseline_name=f"bare cronsim, {OCCURRENCES} occurrences",
                ratio=ratio_of(mine, floor),
                note=f"{rounds} rounds, interleaved; zone {ZONE}, 30 s jitter, JSON rendered; the window "
                "filter also walks the slots it drops"
                if where
                else f"{rounds} rounds, interleaved; zone {ZONE}, 30 s jitter, JSON rendered",
            )
        )
    return figures


if __name__ == "__main__":
    from .stats import render_text

    print(render_text(run(Settings(quick="--quick" in sys.argv[1:]))))
