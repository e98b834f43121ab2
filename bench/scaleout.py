"""Scale-out figures: a run through RQ workers against the same run launched locally, in the same invocation.

* *decision -> first line, warm worker*: the clock starts where the loop has decided to run (the executor's
  ``launch``: bundle, slot claim, enqueue) and stops at the ``time.monotonic_ns()`` the first line of
  ``main()`` writes on the worker (same machine, so the clocks agree). Baseline: the same task through the
  ``LocalExecutor``, interleaved.
* *runs per second through two workers*: trivial manual runs enqueued at once, until every result is back at
  the supervisor's executor.
* *bundle uploads*: bytes sent for 20 launches of an unchanged folder vs one changed folder.

Needs Debian's ``redis-server``; a real redis-server on a free loopback port and two real worker processes.
"""

from __future__ import annotations

import logging
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

from supervisor.clock import SystemClock
from supervisor.events import Event, RunReported
from supervisor.execution.cgroup_layout import Layout
from supervisor.execution.cgroups import Containment
from supervisor.execution.executor import RunRequest, LocalExecutor
from supervisor.logsetup import TaskLogs
from supervisor.model import Limits, RunMode, Trigger, new_run_id
from supervisor.scaleout.executor import RQExecutor

from .common import Settings, now_ns, ready_env, temp_home, write_task
from .redisproc import RedisServer
from .stats import Figure, interleave, ratio_of, summarize

GROUP = "scaleout"
REPO = Path(__file__).resolve().parent.parent

FIRST_LINE_MAIN = """\
import os
import time


def main():
    with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "first-line"), "a") as out:
        out.write("%s %d\\n" % (os.environ["TASK_RUN_ID"], time.monotonic_ns()))
"""


class _Executors:
    """A local executor and an RQ executor on one home, their reports collected from one inbox."""

    def __init__(self, home: Path, redis_url: str) -> None:
        self.home = home
        self.inbox: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.logs = TaskLogs(home / "logs" / "tasks", max_bytes=10**8, backups=1)
        log = logging.getLogger("bench.scaleout")
        self.local = LocalExecutor(
            home=home,
            cookie_prefix="bench-scaleout/",
            task_logs=self.logs,
            logger=log,
            clock=SystemClock(),
            post=self.inbox.put,
            output_cap_bytes=1 << 20,
            containment=Containment(home, layout=Layout()),
        )
        self.rq = RQExecutor(
            local=self.local,
            redis_url=redis_url,
            home_id="bench",
            installer="uv",
            output_cap_bytes=1 << 20,
            task_logs=self.logs,
            logger=log,
            clock=SystemClock(),
            post=self.inbox.put,
        )
        self.ended: set[str] = set()

    def request(self, task: str, python: Path) -> RunRequest:
        folder = self.home / "Tasks" / task
        return RunRequest(
            task=task,
            run_id=new_run_id(SystemClock().now()),
            mode=RunMode.MAIN,
            trigger=Trigger.MANUAL,
            task_dir=folder,
            output_dir=folder / "Output",
            env_key="bench",
            python=python,
            env_dir=python.parent.parent,
            limits=Limits(),
        )

    def pump(self, until: float) -> None:
        """Poll the executors and settle reports until ``until`` (monotonic)."""
        while time.monotonic() < until:
            self.rq.enforce()
            try:
                event = self.inbox.get(timeout=0.005)
            except queue.Empty:
                continue
            if isinstance(event, RunReported):
                result = event.settle()
                if result is not None:
                    self.ended.add(result.run_id)

    def wait_ended(self, run_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ended.issuperset(run_ids):
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(set(run_ids) - self.ended)} run(s) did not report in {timeout} s")
            self.pump(time.monotonic() + 0.05)

    def close(self) -> None:
        self.rq.close()
        self.logs.close()


def _written(output: Path, run_id: str) -> int | None:
    """The monotonic_ns that run ``run_id`` wrote as its first line, if it has."""
    try:
        text = output.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        rid, _, ns = line.partition(" ")
        if rid == run_id:
            return int(ns)
    return None


def _first_line(output: Path, run_id: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (ns := _written(output, run_id)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} wrote no first line to {output}")
        time.sleep(0.0005)  # polling a file the run writes, with a deadline
    return ns


def run(settings: Settings) -> list[Figure]:
    figures: list[Figure] = []
    with temp_home("scaleout", settings) as home:
        redis = RedisServer(home / "redis").start()
        consoles = [open(home / f"worker{i}.txt", "ab") for i in (1, 2)]  # closed at the end
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor",
                    "worker",
                    "--redis",
                    redis.url,
                    "--home",
                    str(home / f"worker{i}"),
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=consoles[i - 1],
                stderr=subprocess.STDOUT,
            )
            for i in (1, 2)
        ]
        executors = _Executors(home, redis.url)
        try:
            python = ready_env(home)
            write_task(home / "Tasks", "first_line", main=FIRST_LINE_MAIN, initialize=None)
            write_task(home / "Tasks", "trivial", main="def main():\n    return None\n", initialize=None)

            def remote() -> float:
                request = executors.request("first_line", python)
                outputs = [home / f"worker{i}" / "Tasks" / "first_line" / "Output" / "first-line" for i in (1, 2)]
                start = now_ns()
                executors.rq.launch(request)
                deadline = time.monotonic() + 30
                while True:
                    found = [ns for ns in (_written(out, request.run_id) for out in outputs) if ns is not None]
                    if found:
                        break
                    if time.monotonic() > deadline:
                        tails = "\n".join((home / f"worker{i}.txt").read_text()[-500:] for i in (1, 2))
                        raise AssertionError(f"run {request.run_id} wrote no first line on a worker:\n{tails}")
                    executors.pump(time.monotonic() + 0.0005)
                executors.wait_ended([request.run_id], 30)
                return (found[0] - start) / 1e6

            def local() -> float:
                request = executors.request("first_line", python)
                start = now_ns()
                executors.local.launch(request)
                ns = _first_line(home / "Tasks" / "first_line" / "Output" / "first-line", request.run_id)
                executors.wait_ended([request.run_id], 30)
                return (ns - start) / 1e6

            remote(), remote(), local()  # warm-up: both workers build/check the env and unpack the bundle
            ours_ms, local_ms = interleave(int(settings.pick(10, 30)), remote, local)
            ours, base = summarize(ours_ms), summarize(local_ms)
            ratio = ratio_of(ours, base)
            figures.append(
                Figure(
                    GROUP,
                    "decision → first line of main(), warm RQ worker",
                    "ms",
                    ours,
                    "≤ 3×",
                    ratio is not None and ratio <= 3,
                    baseline=base,
                    baseline_name="LocalExecutor",
                    ratio=ratio,
                    note="bundle + slot claim + enqueue + worker pick-up + work horse "
                    "fork + env check + shim; same machine, loopback Redis",
                )
            )
            total = int(settings.pick(100, 300))
            requests = [executors.request("trivial", python) for _ in range(total)]
            start = time.monotonic()
            for request in requests:
                executors.rq.launch(request)
            executors.wait_ended([r.run_id for r in requests], 120)
            rate = total / (time.monotonic() - start)
            figures.append(
                Figure(
                    GROUP,
                    "trivial runs per second through two RQ workers",
                    "/s",
                    summarize([rate]),
                    "≥ 50 /s",
                    rate >= 50,
                    note=f"{total} manual runs enqueued at once; a run counts "
                    "when its result is back at the supervisor's executor",
                )
            )
            before = int(executors.rq.redis.info("stats")["total_net_input_bytes"])
            for _ in range(20):
                executors.rq.launch(executors.request("trivial", python))
            unchanged = int(executors.rq.redis.info("stats")["total_net_input_bytes"]) - before
            figures.append(
                Figure(
                    GROUP,
                    "bytes sent to Redis per launch of an unchanged task",
                    "B",
                    summarize([unchanged / 20]),
                    "no bundle re-upload",
                    unchanged / 20 < 4096,
                    note="SET NX on the bundle's digest: unchanged content is sent once",
                )
            )
            executors.pump(time.monotonic() + 2)
        finally:
            executors.close()
            for worker in workers:
                worker.send_signal(signal.SIGINT)
            for worker in workers:
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            redis.stop()
            for console in consoles:
                console.close()
    return figures
