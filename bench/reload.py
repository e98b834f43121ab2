"""Reload figures: a file event reaching the loop, and a new task folder's first run.

* *file event -> loop*: ``supervisor.discovery.watcher.TaskWatcher`` (watchdog's inotify observer, the relevance
  filter, the debounce thread) with a zero debounce, its ``on_change`` posting to a queue that a "loop" thread
  blocks on, exactly as the supervisor's ``post``/``events.get`` do. The clock starts just before a file is
  created in a task folder and stops when the loop thread wakes. Baseline: a bare inotify reader on the same
  folder, in its own process (so the two do not share a GIL), woken by the very same event.
* *new task folder complete -> first run starts*: a real supervisor (``main.py``, default debounce). A folder
  is copied in file by file (Output/, main.py, requirements.txt, then config.ini, renamed into place: the
  moment it is complete). The clock stops at the ``time.monotonic_ns()`` written by the first line of the
  new task's ``main()``: rescan, config, env check, ``initialize()`` in the env, then the run itself.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.harness import SupervisorProcess  # main.py --home HOME, as a user starts it

from supervisor.discovery.watcher import TaskWatcher
from supervisor.model import HomeConfig

from .common import Settings, now_ns, temp_home, wait_for, write_task
from .stats import Figure, ratio_of, summarize

GROUP = "reload"

RAW_INOTIFY = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
fd = libc.inotify_init1(os.O_CLOEXEC)
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
    sys.exit("inotify: errno %d" % ctypes.get_errno())
os.write(1, b"ready\n")
while True:
    os.read(fd, 65536)
    os.write(1, b"%d\n" % time.monotonic_ns())
"""


class _Stamps:
    """Timestamps appended by one thread, waited on by another."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.cond = threading.Condition()

    def add(self, ns: int) -> None:
        with self.cond:
            self.values.append(ns)
            self.cond.notify_all()

    def first_after(self, start: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                later = [v for v in self.values if v >= start]
                if later:
                    return min(later)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no file event arrived within %g s" % timeout)
                self.cond.wait(left)


def event_to_loop(home: Path, *, samples: int) -> tuple[list[float], list[float]]:
    """(ours, raw inotify) ms from a file's creation to the loop thread / the inotify reader waking."""
    folder = write_task(home / "Tasks", "probe")
    ours, raw = _Stamps(), _Stamps()
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    stop = object()

    def loop() -> None:  # the supervisor's loop: blocked in events.get() until something is posted
        while events.get() is not stop:
            ours.add(now_ns())

    loop_thread = threading.Thread(target=loop, name="bench-loop", daemon=True)
    loop_thread.start()
    watcher = TaskWatcher(home / "Tasks", lambda: events.put(None), debounce_s=0.0)
    reader = subprocess.Popen(
        [sys.executable, "-c", RAW_INOTIFY, str(folder)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )

    def read_raw() -> None:
        assert reader.stdout is not None
        for line in reader.stdout:
            if line.strip().isdigit():
                raw.add(int(line))

    try:
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != b"ready":
            raise AssertionError("the raw inotify reader did not start")
        threading.Thread(target=read_raw, name="bench-raw-inotify", daemon=True).start()
        watcher.start()
        if watcher.mode != "inotify":
            raise AssertionError(f"watcher runs in {watcher.mode} mode, not inotify")
        ours_ms: list[float] = []
        raw_ms: list[float] = []
        for index in range(samples + 3):  # the first 3 warm up watchdog's and the reader's paths
            start = now_ns()
            fd = os.open(folder / f"helper{index}.py", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(fd, b"VALUE = 1\n")
            os.close(fd)
            ours_at = ours.first_after(start, timeout=10)
            raw_at = raw.first_after(start, timeout=10)
            if index >= 3:
                ours_ms.append((ours_at - start) / 1e6)
                raw_ms.append((raw_at - start) / 1e6)
            time.sleep(0.02)  # pacing, not synchronisation: let this file's later events drain first
        return ours_ms, raw_ms
    finally:
        watcher.stop()
        events.put(stop)
        loop_thread.join(5)
        reader.kill()
        reader.wait()
        if reader.stdout is not None:
            reader.stdout.close()


FIRST_RUN_MAIN = """\
import os
import time


def main():
    stamp = time.monotonic_ns()
    with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "first_line"), "w") as f:
        f.write(str(stamp))
"""


def folder_to_first_run(home: Path, *, folders: int) -> list[float]:
    """ms from a new folder's config.ini landing (the folder is then complete) to its main()'s first line."""
    staging = home / "staging"
    staging.mkdir()
    samples: list[float] = []
    with SupervisorProcess(home) as sup:
        for index in range(folders + 1):  # folder 0 builds the shared (empty) env: not counted
            name = f"arrival{index:02d}"
            folder = home / "Tasks" / name
            folder.mkdir()
            (folder / "Output").mkdir()
            (folder / "main.py").write_text(FIRST_RUN_MAIN)
            (folder / "requirements.txt").write_text("")
            config = staging / f"{name}.ini"
            config.write_text("[Frequency]\nEveryXMinutes = 1440\n")
            os.rename(config, folder / "config.ini")
            landed = now_ns()
            marker = folder / "Output" / "first_line"
            wait_for(
                lambda: marker.exists() and marker.read_text(),
                timeout=60,
                what=f"first run of {name}\n{sup.log()[-2000:]}",
            )
            if index > 0:
                samples.append((int(marker.read_text()) - landed) / 1e6)
    return samples


def run(settings: Settings) -> list[Figure]:
    figures: list[Figure] = []
    with temp_home("reload", settings) as home:
        ours_ms, raw_ms = event_to_loop(home, samples=int(settings.pick(60, 200)))
        ours, raw = summarize(ours_ms), summarize(raw_ms)
        figures.append(
            Figure(
                GROUP,
                "new task folder: file event → loop",
                "ms",
                ours,
                "≤ 5 ms p99",
                ours.p99 <= 5.0,
                baseline=raw,
                baseline_name="raw inotify",
                ratio=ratio_of(ours, raw),
                tail=True,
                note="TaskWatcher (watchdog inotify + filter + debounce thread, debounce 0) to a thread blocked "
                "on the loop's queue; the raw reader is a separate process woken by the same event",
            )
        )
    with temp_home("arrivals", settings) as home:
        debounce_s = HomeConfig().watch_debounce_s
        samples = folder_to_first_run(home, folders=int(settings.pick(10, 20)))
        latency = summarize(samples)
        overhead = summarize([v - debounce_s * 1000 for v in samples])
        debounce = summarize([debounce_s * 1000])
        figures.append(
            Figure(
                GROUP,
                "new task folder complete → first run starts",
                "ms",
                latency,
                "debounce + ≤ 50 ms",
                overhead.median <= 50.0,
                baseline=debounce,
                baseline_name="debounce period",
                ratio=ratio_of(latency, debounce),
                tail=True,
                note=f"{len(samples)} folders; past the debounce: median {overhead.median:.1f} ms, "
                f"p99 {overhead.p99:.1f} ms (the goal is judged on the median); includes initialize() "
                "in the env and the run's own interpreter start",
            )
        )
    return figures
