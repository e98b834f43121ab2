"""Web dashboard figures: request latency of /api/status, / and a run page; log line to open run page; RSS.

A real ``taskautomation web`` process on a home with 500 task folders and 500,000 history rows (quick: 50 and
20,000), spread over the last days with a share in the last 24 hours (the timeline draws those). No supervisor
runs, so /api/status is the offline document: every task's config.ini is read and its last run looked up,
the heavier of the two paths. The baseline in the same run is the same server's cheapest authenticated
request (``/favicon.ico``: Host check, token check, empty answer), interleaved with the measured ones.

* latency: p99 over sequential requests on one keep-alive connection.
* log line to page: a line appended to an open run's log, until it arrives on the run's event stream.
* RSS: the web process after all requests, against the same process just after start.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
from web_support import WebProcess  # tests/web_support.py: `web --listen 127.0.0.1:0`, as a user starts it

from supervisor.records import Records

from .common import Settings, temp_home
from .stats import Figure, interleave, ratio_of, summarize

GROUP = "web"
OUTCOMES = ("ok",) * 8 + ("failed", "timeout")


def build_home(home: Path, *, tasks: int, rows: int) -> str:
    """Task folders and history rows; returns the id of one open run (whose page and stream are measured)."""
    for i in range(tasks):
        folder = home / "Tasks" / f"task-{i:03d}"
        folder.mkdir(parents=True)
        (folder / "main.py").write_text("def main():\n    return 'ok'\n")
        (folder / "config.ini").write_text(f"[Frequency]\nEveryXMinutes = {5 + i % 55}\n")
    db = home / "logs" / "state" / "history.sqlite3"
    Records(db).close()  # the schema, as the supervisor makes it
    now = datetime.now(timezone.utc)
    per_task = max(rows // tasks, 1)

    def generate():  # newest rows every 10 minutes back from now: ~144 per task fall in the last 24 hours
        for i in range(tasks):
            task = f"task-{i:03d}"
            for k in range(per_task):
                started = now - timedelta(minutes=10 * k + i % 10)
                stamp = started.isoformat(timespec="microseconds")
                yield (f"{started:%Y%m%dT%H%M%S}-{i:03d}{k:06d}", task, "schedule", stamp, stamp,
                       (started + timedelta(seconds=2)).isoformat(timespec="microseconds"), OUTCOMES[k % 10],
                       2.0, 0, None, "done", None, None, None)

    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO runs (run_id, task, trigger, due, started, finished, outcome, duration_s, "
                         "exit_code, signal, message, peak_rss_mb, cpu_s, log_path) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", generate())
        open_id = f"{now:%Y%m%dT%H%M%S}-open"
        conn.execute("INSERT INTO runs (run_id, task, trigger, started) VALUES (?, 'task-000', 'manual', ?)",
                     (open_id, now.isoformat(timespec="microseconds")))
    conn.close()
    log = home / "logs" / "tasks" / "task-000.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"2026-01-01 00:00:00,000 INFO    [run {open_id}] line {n}\n" for n in range(200)))
    return open_id


def _timed(http: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    response = http.get(path)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
    return elapsed


def _floor(http: httpx.Client) -> float:
    start = time.perf_counter()
    http.get("/favicon.ico")
    return (time.perf_counter() - start) * 1000


def line_latencies(http: httpx.Client, log: Path, run_id: str, count: int) -> list[float]:
    """Append ``count`` lines to the open run's log, each after the previous arrived; ms to arrival."""
    found: list[float] = []
    with http.stream("GET", f"/runs/{run_id}/events") as stream:
        lines = stream.iter_lines()
        for line in lines:  # the run's existing lines come first
            if "line 199" in line:
                break
        for n in range(count):
            marker = f"probe {n} end"
            sent = time.perf_counter()
            with open(log, "a") as f:
                f.write(f"2026-01-01 00:00:00,000 INFO    [run {run_id}] {marker}\n")
            for line in lines:
                if marker in line:
                    found.append((time.perf_counter() - sent) * 1000)
                    break
    return found


def run(settings: Settings) -> list[Figure]:
    tasks, rows = int(settings.pick(50, 500)), int(settings.pick(20_000, 500_000))
    requests = int(settings.pick(30, 200))
    with temp_home("web", settings) as home:
        run_id = build_home(home, tasks=tasks, rows=rows)
        with WebProcess(home) as web:
            assert web.proc is not None
            process = psutil.Process(web.proc.pid)
            rss_start = process.memory_info().rss / 1048576
            with httpx.Client(base_url=web.base, headers={"Authorization": f"Bearer {web.token}"},
                              timeout=60) as http:
                for path in ("/api/status", "/", f"/runs/{run_id}"):  # warm caches and imports once
                    _timed(http, path)
                floor, status, index, page = interleave(
                    requests, lambda: _floor(http), lambda: _timed(http, "/api/status"),
                    lambda: _timed(http, "/"), lambda: _timed(http, f"/runs/{run_id}"))
                lines = line_latencies(http, home / "logs" / "tasks" / "task-000.log", run_id,
                                       int(settings.pick(10, 50)))
            rss_end = process.memory_info().rss / 1048576
    base = summarize(floor)
    note = f"{tasks} tasks, {rows:,} history rows, {requests} requests each, interleaved; offline status"
    figures = []
    for name, values, bound in (("/api/status", status, 50.0), ("/ (tasks page)", index, 150.0),
                                ("run page", page, 100.0)):
        ours = summarize(values)
        figures.append(Figure(GROUP, f"{name} latency", "ms", ours, f"p99 ≤ {bound:g} ms", ours.p99 <= bound,
                              baseline=base, baseline_name="favicon (auth only)",
                              ratio=ours.p99 / base.p99 if base.p99 else None, tail=True, note=note))
    arrived = summarize(lines)
    figures.append(Figure(GROUP, "log line to open run page", "ms", arrived, "p99 ≤ 200 ms", arrived.p99 <= 200.0,
                          baseline=base, baseline_name="favicon (auth only)", ratio=ratio_of(arrived, base),
                          tail=True, note="line appended to the task log until it arrives on the SSE stream"))
    figures.append(Figure(GROUP, "web process RSS", "MiB", summarize([rss_end]), "≤ 80 MiB", rss_end <= 80.0,
                          baseline=summarize([rss_start]), baseline_name="same process at start",
                          ratio=rss_end / rss_start if rss_start else None))
    return figures
