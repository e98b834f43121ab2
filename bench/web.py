"""Web dashboard figures: request latency of /api/status, /, a run page and /metrics; log line to open run page;
RSS; the supervisor's responsiveness while the page is polled.

A real ``taskautomation web`` process on a home with 500 task folders and 500,000 history rows (quick: 50 and
20,000), spread over the last days with a share in the last 24 hours (the timeline draws those). Two phases:

* offline (no supervisor): /api/status is the offline document, built from every task's config.ini (kept
  parsed by file signature) and the history (a few statements for all tasks).
* live: a real supervisor (tests/support/harness.py ``SupervisorProcess``) on the same home answers /api/status over
  its control socket. Every task's schedule anchor is recent and its interval long, so no task runs: what
  the supervisor does is answer the dashboard.

The baseline in the same run is the same server's cheapest authenticated request (``/favicon.ico``: Host
check, token check, empty answer), interleaved with the measured ones.

* latency: p99 over sequential requests on one keep-alive connection.
* /metrics: the Prometheus exposition of every task (about 34 samples each). Nothing changes between the
  requests, so after the process's first scrape each one reads the status and the database's data version
  and formats no task again (query/metrics.py keeps each task's text until its figures change). A scrape
  that formats every task (the process's first; the first live one, when every next run changed) is its own
  row.
* log line to page: a line appended to an open run's log, until it arrives on the run's event stream.
* RSS: the web process after all requests, against the same process just after start.
* supervisor lateness while polled: the round trip of a no-op control request (an unknown command, answered
  by the loop thread from the same queue wait that wakes it for a due run, so it measures how long the loop
  is busy elsewhere), sent every 20 ms; blocks with the tasks page polled 10x/s by another thread alternate
  with blocks without polling. The schedule's own due times are minutes apart, too sparse to measure here.
  A second row asks for ``status`` 10x/s from a separate process over the raw control socket: the
  supervisor's own share, without the dashboard's page rendering competing for the two cores. A third
  alternates blocks with /metrics scraped 10x/s (far above any real scrape rate) with blocks without.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
from tests.support.harness import SupervisorProcess  # main.py --home HOME, as a user starts it
from tests.support.web_support import WebProcess  # `web --listen 127.0.0.1:0`, as a user starts it

from supervisor.history.store import HistoryStore
from supervisor.system.control import request

from .common import Settings, temp_home
from .stats import Figure, Summary, interleave, ratio_of, summarize

GROUP = "web"
OUTCOMES = ("ok",) * 8 + ("failed", "timeout")


def build_home(home: Path, *, tasks: int, rows: int) -> str:
    """Task folders and history rows; returns the id of one open run (whose page and stream are measured)."""
    for i in range(tasks):
        folder = home / "Tasks" / f"task-{i:03d}"
        folder.mkdir(parents=True)
        (folder / "main.py").write_text("def main():\n    return 'ok'\n")
        # Long intervals: with the recent history as anchors, no task falls due while the live phase runs.
        (folder / "config.ini").write_text(f"[Frequency]\nEveryXMinutes = {600 + i % 55}\n")
    db = home / "logs" / "state" / "history.sqlite3"
    HistoryStore(db).close()  # the schema, as the supervisor makes it
    now = datetime.now(timezone.utc)
    per_task = max(rows // tasks, 1)

    def generate():  # newest rows every 10 minutes back from now: ~144 per task fall in the last 24 hours
        for i in range(tasks):
            task = f"task-{i:03d}"
            for k in range(per_task):
                started = now - timedelta(minutes=10 * k + i % 10)
                stamp = started.isoformat(timespec="microseconds")
                yield (
                    f"{started:%Y%m%dT%H%M%S}-{i:03d}{k:06d}",
                    task,
                    "schedule",
                    stamp,
                    stamp,
                    (started + timedelta(seconds=2)).isoformat(timespec="microseconds"),
                    OUTCOMES[k % 10],
                    2.0,
                    0,
                    None,
                    "done",
                    None,
                    None,
                    None,
                )

    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO runs (run_id, task, trigger, due, started, finished, outcome, duration_s, "
            "exit_code, signal, message, peak_rss_mb, cpu_s, log_path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            generate(),
        )
        open_id = f"{now:%Y%m%dT%H%M%S}-open"
        conn.execute(
            "INSERT INTO runs (run_id, task, trigger, started) VALUES (?, 'task-000', 'manual', ?)",
            (open_id, now.isoformat(timespec="microseconds")),
        )
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


def loop_probes(sup: SupervisorProcess, count: int, *, every_s: float = 0.02) -> list[float]:
    """ms round trip of ``count`` no-op control requests, one every ``every_s``."""
    found = []
    for _ in range(count):
        start = time.perf_counter()
        reply = request(sup.paths.control_socket, "bench-noop", timeout=30)
        found.append((time.perf_counter() - start) * 1000)
        if reply.get("ok") is not False:
            raise RuntimeError(f"unexpected reply to a no-op: {reply}")
        time.sleep(max(every_s - (time.perf_counter() - start), 0))
    return found


class Poller:
    """Another thread polling ``path`` at ``rate`` per second (what an open dashboard page does, and more)."""

    def __init__(self, http: httpx.Client, path: str, *, rate: float) -> None:
        self.http, self.path, self.period = http, path, 1 / rate
        self.stop = threading.Event()
        self.done = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            _timed(self.http, self.path)
            self.done += 1
            self.stop.wait(max(self.period - (time.perf_counter() - start), 0))

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _client(web: WebProcess) -> httpx.Client:
    return httpx.Client(base_url=web.base, headers={"Authorization": f"Bearer {web.token}"}, timeout=60)


def _latencies(http: httpx.Client, run_id: str, requests: int) -> tuple[float, list[list[float]]]:
    """The first /metrics of this web process (every task formatted), then the interleaved latencies."""
    first_scrape = _timed(http, "/metrics")
    for path in ("/api/status", "/", f"/runs/{run_id}"):  # warm caches and imports once
        _timed(http, path)
    return first_scrape, interleave(
        requests,
        lambda: _floor(http),
        lambda: _timed(http, "/api/status"),
        lambda: _timed(http, "/"),
        lambda: _timed(http, f"/runs/{run_id}"),
        lambda: _timed(http, "/metrics"),
    )


def run(settings: Settings) -> list[Figure]:
    tasks, rows = int(settings.pick(50, 500)), int(settings.pick(20_000, 500_000))
    requests = int(settings.pick(30, 200))
    probes, rounds = int(settings.pick(50, 250)), int(settings.pick(2, 4))
    with temp_home("web", settings) as home:
        run_id = build_home(home, tasks=tasks, rows=rows)
        with WebProcess(home) as web:
            assert web.proc is not None
            process = psutil.Process(web.proc.pid)
            rss_start = process.memory_info().rss / 1048576
            with _client(web) as http:
                first_scrape, (floor, status, index, page, scrape) = _latencies(http, run_id, requests)
                lines = line_latencies(
                    http, home / "logs" / "tasks" / "task-000.log", run_id, int(settings.pick(10, 50))
                )
            with SupervisorProcess(home) as sup, _client(web) as http:
                _wait_live(http, tasks)
                live_first_scrape, (live_floor, live_status, live_index, live_page, live_scrape) = _latencies(
                    http, run_id, requests
                )
                quiet, polled, polls = _loop_while_polled(sup, web, "/", probes=probes, rounds=rounds)
                direct: list[float] = []
                direct_polls = 0
                for _ in range(rounds):
                    with StatusPoller(sup.paths.control_socket, rate=10) as status_poller:
                        direct += loop_probes(sup, probes)
                    direct_polls += status_poller.done()
                unscraped, scraped, scrapes = _loop_while_polled(sup, web, "/metrics", probes=probes, rounds=rounds)
            rss_end = process.memory_info().rss / 1048576
    base = summarize(floor)
    figures = []
    for phase, floor_of, measured, first in (
        ("offline", base, (status, index, page, scrape), first_scrape),
        ("live", summarize(live_floor), (live_status, live_index, live_page, live_scrape), live_first_scrape),
    ):
        note = f"{tasks} tasks, {rows:,} history rows, {requests} requests each, interleaved; {phase} status"
        names = ("/api/status", "/ (tasks page)", "run page", "/metrics")
        for name, values, bound in zip(names, measured, (50.0, 150.0, 100.0, 20.0)):
            ours = summarize(values)
            figures.append(
                Figure(
                    GROUP,
                    f"{name} latency, {phase}",
                    "ms",
                    ours,
                    f"p99 ≤ {bound:g} ms",
                    ours.p99 <= bound,
                    baseline=floor_of,
                    baseline_name="favicon (auth only)",
                    ratio=ours.p99 / floor_of.p99 if floor_of.p99 else None,
                    tail=True,
                    note=note,
                )
            )
        figures.append(
            Figure(
                GROUP,
                f"/metrics first scrape, {phase}",
                "ms",
                summarize([first]),
                "— (informative)",
                None,
                baseline=floor_of,
                baseline_name="favicon (auth only)",
                ratio=first / floor_of.median if floor_of.median else None,
                note=f"{tasks} tasks, every one formatted: offline, the web process's first scrape; live, the first "
                "after the supervisor came (every task's next run and state changed)",
            )
        )
    arrived = summarize(lines)
    figures.append(
        Figure(
            GROUP,
            "log line to open run page",
            "ms",
            arrived,
            "p99 ≤ 200 ms",
            arrived.p99 <= 200.0,
            baseline=base,
            baseline_name="favicon (auth only)",
            ratio=ratio_of(arrived, base),
            tail=True,
            note="line appended to the task log until it arrives on the SSE stream",
        )
    )
    figures.append(
        Figure(
            GROUP,
            "web process RSS",
            "MiB",
            summarize([rss_end]),
            "≤ 80 MiB",
            rss_end <= 80.0,
            baseline=summarize([rss_start]),
            baseline_name="same process at start",
            ratio=rss_end / rss_start if rss_start else None,
        )
    )
    calm = summarize(quiet)
    figures.append(
        _lateness(
            "supervisor loop lateness while / is polled 10×/s",
            summarize(polled),
            calm,
            f"no-op control round trip every 20 ms, {rounds} alternating rounds of {probes}; "
            f"{polls} page loads while polled",
        )
    )
    figures.append(
        _lateness(
            "supervisor loop lateness while status is asked 10×/s by another process",
            summarize(direct),
            calm,
            "the supervisor's own share of the row above: raw `status` requests on the control socket from a "
            f"separate process (no dashboard rendering on the shared cores); {direct_polls} answers",
        )
    )
    figures.append(
        _lateness(
            "supervisor loop lateness while /metrics is scraped 10×/s",
            summarize(scraped),
            summarize(unscraped),
            f"no-op control round trip every 20 ms, {rounds} alternating rounds of {probes}; {scrapes} scrapes "
            "(a Prometheus server scrapes every 15–60 s: this is 150–600 of them at once)",
            quiet_name="not scraped",
        )
    )
    return figures


def _lateness(name: str, loud: Summary, calm: Summary, note: str, *, quiet_name: str = "not polled") -> Figure:
    """A loop-lateness row: p99 while something polls against the same supervisor left alone."""
    ratio = loud.p99 / calm.p99 if calm.p99 else None
    return Figure(
        GROUP,
        name,
        "ms",
        loud,
        f"p99 ≤ 1.5× {quiet_name}",
        ratio is not None and ratio <= 1.5,
        baseline=calm,
        baseline_name=f"same supervisor, {quiet_name}",
        ratio=ratio,
        tail=True,
        note=note,
    )


def _loop_while_polled(
    sup: SupervisorProcess, web: WebProcess, path: str, *, probes: int, rounds: int
) -> tuple[list[float], list[float], int]:
    """Loop probes in blocks alternating between ``path`` polled 10×/s by another thread and not polled; the
    quiet probes, the polled probes and how many requests the poller made."""
    quiet: list[float] = []
    polled: list[float] = []
    requests = 0
    for _ in range(rounds):
        quiet += loop_probes(sup, probes)
        with _client(web) as other, Poller(other, path, rate=10) as poller:
            polled += loop_probes(sup, probes)
        requests += poller.done
    return quiet, polled, requests


# A separate interpreter asks for status over the raw control socket (the reply is read, not parsed), so the
# figure holds only what answering costs the supervisor, not the asker's own CPU or GIL.
_STATUS_POLLER = r"""
import socket, sys, time
path, period = sys.argv[1], float(sys.argv[2])
answers = 0
sys.stdin.readline()  # the bench says "go" once the probes are about to start
while True:
    started = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b'{"command": "status"}\n')
    while not s.recv(1 << 20).endswith(b"\n"):
        pass
    s.close()
    answers += 1
    print(answers, flush=True)
    time.sleep(max(0.0, period - (time.monotonic() - started)))
"""


class StatusPoller:
    """``status`` asked ``rate`` times a second by another process for the duration of a ``with`` block."""

    def __init__(self, socket_path: Path, *, rate: float) -> None:
        self._argv = [sys.executable, "-c", _STATUS_POLLER, str(socket_path), str(1.0 / rate)]
        self._proc: subprocess.Popen[str] | None = None
        self._answers = 0

    def __enter__(self) -> StatusPoller:
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("go\n")
        self._proc.stdin.flush()
        self._proc.stdout.readline()  # the first answer: polling has begun
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        lines = out.split()
        self._answers = int(lines[-1]) if lines else 1

    def done(self) -> int:
        return self._answers


def _wait_live(http: httpx.Client, tasks: int, timeout: float = 120) -> None:
    """Until /api/status is the supervisor's (live) document with every task loaded and initialized (the
    start's own work would otherwise be measured as the dashboard's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = http.get("/api/status").json()
        if (
            doc.get("supervisor")
            and len(doc.get("tasks", [])) >= tasks
            and all(t.get("state") not in ("loading", "initializing") for t in doc["tasks"])
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the supervisor did not load {tasks} tasks within {timeout:g} s")
