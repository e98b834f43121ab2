"""500-task figures: start-up until all are scheduled (cold, warm), idle CPU and wake-ups, memory.

A real supervisor (``main.py --home HOME``) on a home with 500 tasks that share 50 distinct requirement sets
(each ``--no-index --find-links`` to one of 50 local wheels). Every task is Testing=False, and its window opens
hours from now, so once loaded nothing is due: an idle supervisor.

* *start, cold*: envs/ empty and a fresh ``UV_CACHE_DIR``: 50 env builds plus 500 ``initialize()`` runs.
  *warm*: the same home again (envs built). Both from the spawn of ``main.py`` to the timestamp of the 500th
  "loaded" line in the supervisor log (the task is scheduled from that moment).
* *idle CPU*: CPU time of every thread of the supervisor over the window, from ``/proc/PID/task/*/schedstat``
  (nanoseconds; ``psutil.cpu_times`` counts in 10 ms ticks, too coarse for a goal of 0.01 %), against the
  old design re-implemented as 500 threads that each poll every 5 s, measured over the same window.
* *wake-ups*: context switches of all threads over the window, per second.
* *memory*: the supervisor's RSS at the end of the idle window.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from tests.support.harness import SupervisorProcess  # main.py --home HOME, as a user starts it

from .common import Settings, build_wheel, temp_home, wait_for, write_task
from .stats import Figure, ratio_of, summarize

GROUP = "idle"
TASKS = 500
REQUIREMENT_SETS = 50

LOADED_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*': loaded: every", re.MULTILINE)

OLD_DESIGN = r"""
import sys, threading, time
tasks, poll = int(sys.argv[1]), 5.0
def task(offset):
    time.sleep(offset)
    last = time.monotonic()
    while True:
        if time.monotonic() - last >= 86400:  # never due during the benchmark
            last = time.monotonic()
        time.sleep(poll)
for index in range(tasks):
    threading.Thread(target=task, args=(index * poll / tasks,), daemon=True).start()
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()  # until the benchmark closes our stdin
"""


def _far_window() -> tuple[str, str]:
    """A one-hour window that opens about six hours from now (local time): nothing is due meanwhile."""
    start = datetime.now() + timedelta(hours=6)
    end = start + timedelta(hours=1)
    return f"{start:%H:%M}", f"{end:%H:%M}"


def make_home(home: Path, wheels: Path) -> None:
    allowed_from, allowed_to = _far_window()
    config = (
        f"[Frequency]\nEveryXMinutes = 60\nAllowedFrom = {allowed_from}\nAllowedTo = {allowed_to}\n"
        "[Global]\nEnabled = True\nTesting = False\nRunOnStartup = False\n"
    )
    for index in range(REQUIREMENT_SETS):
        build_wheel(wheels, f"bench-req-{index:02d}", "1.0")
    for index in range(TASKS):
        package = f"bench-req-{index % REQUIREMENT_SETS:02d}"
        write_task(
            home / "Tasks",
            f"t{index:03d}",
            config=config,
            main=f"import {package.replace('-', '_')}\n\ndef main():\n    return None\n",
            requirements=f"--no-index\n--find-links {wheels}\n{package}\n",
        )


def _loaded_times(log: str) -> list[float]:
    """Epoch seconds of every "loaded" line (the log's asctime is local time with milliseconds)."""
    return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in LOADED_RE.findall(log)]


def start_until_scheduled(sup: SupervisorProcess, *, timeout: float) -> tuple[float, float, float]:
    """Start ``sup``; (seconds from its spawn until all TASKS are loaded, its own CPU s, its children's CPU s).

    The children's CPU (installers, and every run's monitor with the task process it reaped) is what the
    start cost in interpreters: on 2 cores it bounds the start time from below.
    """
    log_path = sup.paths.supervisor_log
    before = len(_loaded_times(log_path.read_text(errors="replace"))) if log_path.exists() else 0
    started = time.time()
    sup.start(wait_ready=False)

    def all_loaded() -> list[float] | None:
        assert sup.proc is not None
        if sup.proc.poll() is not None:
            raise AssertionError(f"supervisor exited early:\n{sup.console_text()[-3000:]}")
        times = _loaded_times(log_path.read_text(errors="replace")) if log_path.exists() else []
        return times if len(times) - before >= TASKS else None

    times = wait_for(all_loaded, timeout=timeout, interval=0.1, what=f"{TASKS} tasks to be loaded")
    assert sup.proc is not None
    cpu = psutil.Process(sup.proc.pid).cpu_times()
    return max(times[before:]) - started, cpu.user + cpu.system, cpu.children_user + cpu.children_system


def _threads_cpu_and_switches(pid: int) -> tuple[int, int]:
    """(ns on CPU, context switches) summed over every thread of ``pid``."""
    cpu = switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                cpu += int(handle.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as handle:
                for line in handle:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return cpu, switches


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def idle_window(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """For each named pid: (% of one core, wake-ups per second) over the same ``seconds``."""
    before = {name: _threads_cpu_and_switches(pid) for name, pid in pids.items()}
    start = time.monotonic()
    time.sleep(seconds)  # the measurement window itself: both processes are left alone meanwhile
    elapsed = time.monotonic() - start
    result = {}
    for name, pid in pids.items():
        cpu, switches = _threads_cpu_and_switches(pid)
        result[name] = ((cpu - before[name][0]) / 1e9 / elapsed * 100, (switches - before[name][1]) / elapsed)
    return result


def run(settings: Settings) -> list[Figure]:
    window_s = float(settings.pick(10, 30))
    figures: list[Figure] = []
    with temp_home("idle", settings) as home:
        make_home(home, home / "wheels")
        cache = Path(tempfile.mkdtemp(prefix="uv-cache-", dir=home))
        previous_cache = os.environ.get("UV_CACHE_DIR")
        os.environ["UV_CACHE_DIR"] = str(cache)  # fresh for the cold start: inherited by the supervisor
        sup = SupervisorProcess(home)
        old = None
        try:
            cold_s, _, _ = start_until_scheduled(sup, timeout=300)
            sup.stop()
            warm_s, warm_self_cpu, warm_children_cpu = start_until_scheduled(sup, timeout=120)
            assert sup.proc is not None
            old = subprocess.Popen(
                [sys.executable, "-c", OLD_DESIGN, str(TASKS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            assert old.stdout is not None
            if old.stdout.readline().strip() != b"ready":
                raise AssertionError("the polling-design process did not start")
            time.sleep(float(settings.pick(5, 10)))  # pacing: initialize() relays end, polls get staggered
            measured = idle_window({"ours": sup.proc.pid, "old": old.pid}, window_s)
            rss_ours = _rss_mib(sup.proc.pid)
            rss_old = _rss_mib(old.pid)
        finally:
            if old is not None:
                old.kill()
                old.wait()
                for stream in (old.stdin, old.stdout):
                    if stream is not None:
                        stream.close()
            try:
                sup.stop()
            except Exception:  # noqa: BLE001 - a failed stop must still not leave the supervisor running
                sup.kill()
            if previous_cache is None:
                os.environ.pop("UV_CACHE_DIR", None)
            else:
                os.environ["UV_CACHE_DIR"] = previous_cache

    ours_cpu, ours_wakeups = measured["ours"]
    old_cpu, old_wakeups = measured["old"]
    figures += [
        Figure(
            GROUP,
            f"start with {TASKS} tasks, {REQUIREMENT_SETS} requirement sets: all scheduled, cold",
            "s",
            summarize([cold_s]),
            "≤ 30 s",
            cold_s <= 30.0,
            note=f"{REQUIREMENT_SETS} env builds (uv, fresh UV_CACHE_DIR) and {TASKS} initialize() runs; "
            "spawn of main.py to the last 'loaded' log line",
        ),
        Figure(
            GROUP,
            f"start with {TASKS} tasks, {REQUIREMENT_SETS} requirement sets: all scheduled, warm",
            "s",
            summarize([warm_s]),
            "≤ 3 s",
            warm_s <= 3.0,
            note=f"envs already built: {TASKS} env checks and {TASKS} initialize() runs. Why it misses: "
            f"each initialize() is one interpreter start plus a fork (shim: monitor + task process); "
            f"they cost {warm_children_cpu:.1f} CPU s ({warm_children_cpu / TASKS * 1000:.1f} ms each) "
            f"and the supervisor {warm_self_cpu:.1f} CPU s, i.e. at least "
            f"{(warm_children_cpu + warm_self_cpu) / (os.cpu_count() or 1):.1f} s on {os.cpu_count()} "
            "cores even with perfect overlap. Meeting 3 s needs fewer interpreter starts (e.g. a per-env "
            "fork server for initialize()), not a faster loop",
        ),
        Figure(
            GROUP,
            f"idle CPU with {TASKS} loaded tasks",
            "% of a core",
            summarize([ours_cpu]),
            "≤ 0.01 %",
            ours_cpu <= 0.01,
            baseline=summarize([old_cpu]),
            baseline_name="thread per task, polling every 5 s",
            ratio=ratio_of(summarize([ours_cpu]), summarize([old_cpu])),
            note=f"{window_s:g} s window, both processes measured over the same window; CPU from "
            "/proc/PID/task/*/schedstat (ns)",
        ),
        Figure(
            GROUP,
            f"idle wake-ups with {TASKS} loaded tasks, none due",
            "/s",
            summarize([ours_wakeups]),
            "scale with due runs, not tasks (≤ 1/s with none due)",
            ours_wakeups <= 1.0,
            baseline=summarize([old_wakeups]),
            baseline_name="thread per task, polling every 5 s",
            ratio=ratio_of(summarize([ours_wakeups]), summarize([old_wakeups])),
            note="context switches (voluntary + involuntary) of all threads, per second",
        ),
        Figure(
            GROUP,
            f"supervisor memory with {TASKS} tasks",
            "MiB RSS",
            summarize([rss_ours]),
            "≤ 40 MiB",
            rss_ours <= 40.0,
            baseline=summarize([rss_old]),
            baseline_name="polling design (500 idle threads)",
            ratio=ratio_of(summarize([rss_ours]), summarize([rss_old])),
            note="VmRSS at the end of the idle window, after the warm start",
        ),
    ]
    return figures
