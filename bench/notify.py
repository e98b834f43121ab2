"""Notifications never hurt scheduling: canary lateness with notices piling up for a receiver that hangs.

Two real supervisors (``main.py --home HOME``), one after the other, each with the same two tasks:

* *Canary*: every 0.3 s, returns at once. Its lateness is (start - due) from its history rows.
* *Noisy*: every 0.3 s, returns at once. In the measured home it has ``On = success`` and five ``json://``
  URLs plus a ``PingUrl`` on a local server that accepts connections and never answers, so every run queues
  five notices and a ping that each block the delivery thread for 10 s per try: within seconds more than 50
  notices wait. In the baseline home the same task has no ``[Notify]`` section.

Figures: the canary's p99 lateness with the notices queued vs without (goal: ratio ≤ 1.2, or both within
2 ms of each other, the noise floor of a 2-core machine), and the memory the delivery queue holds after
10 000 notices were posted to the hanging receiver in this process (bounded by the queue's capacity).
"""

from __future__ import annotations

import tracemalloc
from datetime import datetime
from pathlib import Path

from tests.support.harness import SupervisorProcess  # main.py --home HOME, as a user starts it
from tests.support.receivers import HangingReceiver  # accepts connections, never answers

from .common import Settings, temp_home, wait_for, write_task
from .stats import Figure, summarize

GROUP = "notify"
PERIOD_MIN = 0.005  # 0.3 s
NOISE_FLOOR_MS = 2.0


def canary_lateness(settings: Settings, *, notify_port: int | None, runs: int) -> tuple[list[float], int]:
    """ms late of ``runs`` scheduled canary starts, and how many Noisy runs happened meanwhile."""
    with temp_home("notify", settings) as home:
        notify = ""
        if notify_port is not None:
            urls = ", ".join(f"json://127.0.0.1:{notify_port}/n{i}" for i in range(5))
            notify = f"[Notify]\nUrls = {urls}\nOn = success\nPingUrl = http://127.0.0.1:{notify_port}/hc\n"
        write_task(
            home / "Tasks",
            "Noisy",
            main="def main():\n    return 'fine'\n",
            config=f"[Frequency]\nEveryXMinutes = {PERIOD_MIN}\n{notify}",
        )
        write_task(
            home / "Tasks",
            "Canary",
            main="def main():\n    return 'tweet'\n",
            config=f"[Frequency]\nEveryXMinutes = {PERIOD_MIN}\n",
        )
        with SupervisorProcess(home) as sup:
            wait_for(lambda: len(sup.history("Noisy")) >= 10, timeout=120, what="10 noisy runs (50 notices)")
            skip = len(sup.history("Canary"))
            wait_for(
                lambda: len(sup.history("Canary")) >= skip + runs, timeout=runs * 2 + 60, what=f"{runs} canary runs"
            )
            rows = [r for r in reversed(sup.history("Canary")) if r["trigger"] == "schedule"][skip : skip + runs]
            noisy = len(sup.history("Noisy"))
    late = [
        (datetime.fromisoformat(r["started"]) - datetime.fromisoformat(r["due"])).total_seconds() * 1000 for r in rows
    ]
    return late, noisy


def queue_memory_kb(notices: int, *, capacity: int = 200) -> tuple[float, int]:
    """KB held by the delivery machinery after ``notices`` posts to a hanging receiver; and its pending count."""
    import logging

    from supervisor.notify.message import Origin
    from supervisor.model import NotifySettings
    from supervisor.notify.model import RunFact
    from supervisor.notify.notifier import Notifier

    hanging = HangingReceiver()
    log = logging.getLogger("bench.notify")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())  # the WARNINGs about the hanging receiver are expected here
    notifier = Notifier(origin=Origin("bench", Path("/")), logger=log, capacity=capacity)
    notifier.start()
    settings = NotifySettings(urls=(f"json://127.0.0.1:{hanging.port}/n",))
    try:
        # Warm up: the first delivery imports Apprise (megabytes of modules); measure once the worker is
        # stuck in the hanging receiver, so only what the queue holds is counted.
        notifier.run_finished(
            RunFact(task="T", run_id="warm-up", outcome="failed", consecutive_failures=1), settings=settings
        )
        wait_for(lambda: hanging.connections, timeout=30, what="the delivery worker to reach the hanging receiver")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(notices):
            notifier.forget("T")
            notifier.run_finished(
                RunFact(task="T", run_id=f"r{i}", outcome="failed", consecutive_failures=1, message="x" * 2000),
                settings=settings,
            )
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / 1024, notifier.delivery.pending()
    finally:
        notifier.close(drain_s=0.1)
        hanging.close()


def run(settings: Settings) -> list[Figure]:
    runs = int(settings.pick(30, 150))
    hanging = HangingReceiver()
    try:
        base, _ = canary_lateness(settings, notify_port=None, runs=runs)
        loaded, noisy = canary_lateness(settings, notify_port=hanging.port, runs=runs)
    finally:
        hanging.close()
    b, ours = summarize(base), summarize(loaded)
    ratio = ours.p99 / b.p99 if b.p99 > 0 else None
    passed = (ratio is not None and ratio <= 1.2) or ours.p99 - b.p99 <= NOISE_FLOOR_MS
    small_kb, _ = queue_memory_kb(200)
    big_kb, big_pending = queue_memory_kb(10_000)
    return [
        Figure(
            GROUP,
            "canary lateness p99, notices queued to a hanging receiver",
            "ms",
            ours,
            f"ratio ≤ 1.2 (or within {NOISE_FLOOR_MS:g} ms)",
            passed,
            baseline=b,
            baseline_name="same supervisor, no notifications",
            ratio=ratio,
            tail=True,
            note=f"{runs} canary runs every {PERIOD_MIN * 60:g} s; {noisy} noisy runs × 5 notices + 1 ping "
            "each, to a server that never answers; ratio of p99s",
        ),
        Figure(
            GROUP,
            "delivery queue memory after 10 000 notices",
            "KB",
            summarize([big_kb]),
            "bounded (≈ the 200-notice figure)",
            big_kb <= 1.5 * small_kb + 64 and big_pending <= 201,
            baseline=summarize([small_kb]),
            baseline_name="after 200 notices",
            ratio=big_kb / small_kb if small_kb > 0 else None,
            note=f"queue capacity 200; pending {big_pending} after 10 000 posts (oldest dropped)",
        ),
    ]
