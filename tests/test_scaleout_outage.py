"""Workers survive Redis outages: a real redis-server killed and started again under busy and idle workers."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from bench.redisproc import RedisServer
from supervisor.events import Event, RunReported
from supervisor.logsetup import TaskLogs
from supervisor.model import Outcome, RunResult
from supervisor.scaleout.worker import WATCH_INTERVAL_S
from tests.support.harness import SupervisorProcess, cli, pids_alive
from tests.support.helpers import wait_for, write_task
from tests.support.rqworkers import LogLines, Worker, main_request, rq_executor, running_redis

pytestmark = pytest.mark.timeout(180)

# The run writes its pid, then waits for a "go" file (its own deadline bounds it), then ends ok.
GATED_MAIN = """
def main():
    import os, time
    out = os.environ['TASK_OUTPUT_DIR']
    open(os.path.join(out, 'started'), 'w').write(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(out, 'go')) and time.monotonic() < deadline:
        time.sleep(0.05)
    return 'survived'
"""
FAST_BACKOFF = ("--max-backoff", "0.5")  # the worker retries Redis at least every 0.5 s: the test stays short


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def _started(worker: Worker, task: str) -> int | None:
    marker = worker.home / "Tasks" / task / "Output" / "started"
    text = marker.read_text() if marker.exists() else ""
    return int(text) if text else None


def _release(worker: Worker, task: str) -> None:
    (worker.home / "Tasks" / task / "Output" / "go").write_text("")


def _oks(sup: SupervisorProcess, task: str) -> list[dict[str, object]]:
    return [r for r in sup.history(task) if r["outcome"] == "ok"]


def test_a_busy_and_an_idle_worker_survive_a_redis_restart(home: Path, tmp_path: Path, redis: RedisServer) -> None:
    busy = Worker(tmp_path / "busy", redis.url, f"busy-{tmp_path.name[-12:]}", extra=FAST_BACKOFF)
    idle = Worker(tmp_path / "idle", redis.url, f"idle-{tmp_path.name[-12:]}", extra=(*FAST_BACKOFF, "--queues", "q2"))
    try:
        write_task(home / "Tasks", "Slow", main=GATED_MAIN, config="[Frequency]\nEveryXMinutes = 600\n")
        (home / "taskautomation.ini").write_text(f"[Supervisor]\nExecutor = rq\nRedisUrl = {redis.url}\n")
        with SupervisorProcess(home) as sup:
            task_pid = wait_for(lambda: _started(busy, "Slow"), timeout=90, what="the run started on the worker")
            wait_for(lambda: sup.task_status("Slow")["state"] == "running", timeout=10, what="state running")
            horse = busy.horse_pids()
            redis.stop()  # an empty Redis comes back: the job itself is gone from RQ's records
            outage_ends = time.monotonic() + WATCH_INTERVAL_S + 1
            wait_for(lambda: "unreachable" in busy.console(), timeout=15, what="the busy worker to notice")
            wait_for(lambda: "unreachable" in idle.console(), timeout=15, what="the idle worker to notice")
            # The run ends while Redis is away: its horse lives on, holding the result.
            _release(busy, "Slow")
            wait_for(lambda: not pids_alive([task_pid]), timeout=15, what="the task's process to end")
            assert busy.horse_pids() == horse and busy.proc.poll() is None
            # The scenario, not a synchronisation: the outage spans at least one of the busy worker's heartbeats.
            time.sleep(max(0.0, outage_ends - time.monotonic()))
            assert busy.horse_pids() == horse and busy.proc.poll() is None
            redis.start()
            ok = wait_for(lambda: _oks(sup, "Slow"), timeout=30, what="the run recorded ok")
            assert ok[0]["message"] == "survived"
            assert busy.proc.poll() is None and idle.proc.poll() is None
            for worker in (busy, idle):  # each says it once when Redis answers again (at its next call)
                wait_for(lambda w=worker: "reachable again" in w.console(), timeout=15, what="Redis back, logged")
                console = worker.console()
                assert console.count("unreachable") == 1 and console.count("reachable again") == 1, console
                assert "quitting" not in console and "Traceback" not in console, console
            # The next job runs on the same worker; the idle one takes a job of its queue.
            assert cli(home, "run-now", "Slow").returncode == 0
            wait_for(lambda: len(_oks(sup, "Slow")) == 2, timeout=30, what="a second ok run on the busy worker")
            write_task(home / "Tasks", "Other", config="[Frequency]\nEveryXMinutes = 600\n\n[Global]\nQueue = q2\n")
            wait_for(lambda: _oks(sup, "Other"), timeout=90, what="an ok run on the idle worker")
            assert "[run " in idle.task_log("Other")
            assert busy.proc.poll() is None and idle.proc.poll() is None
        for worker in (busy, idle):  # a stop is still a stop: SIGINT ends each at once (no job in flight)
            worker.proc.send_signal(signal.SIGINT)
            assert worker.proc.wait(timeout=10) == 0, worker.console()
            assert "starting it again" not in worker.console()
    finally:
        busy.stop()
        idle.stop()


def test_the_backstop_ends_a_run_not_heard_from_and_ignores_its_late_result(
    home: Path, tmp_path: Path, redis: RedisServer
) -> None:
    """The supervisor's side, with a backstop of 2 s instead of 300 s: a real Redis, a real worker."""
    folder = write_task(home / "Tasks", "Late", main=GATED_MAIN)
    logs = TaskLogs(home / "logs" / "tasks", max_bytes=10**6, backups=1)
    records = LogLines()
    log = logging.getLogger(f"backstop-{os.getpid()}")
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    posted: list[Event] = []
    executor = rq_executor(
        home, redis.url, task_logs=logs, home_id="backstop", logger=log, post=posted.append, lost_after_s=2.0
    )
    # A worker started while Redis is down waits for it (and takes its URL from the environment, as its
    # systemd unit starts it).
    redis.stop()
    worker = Worker(tmp_path / "worker", redis.url, f"late-{tmp_path.name[-12:]}", extra=FAST_BACKOFF, url_in_env=True)

    def ended() -> RunResult | None:
        executor.enforce()
        return next((r for e in posted if isinstance(e, RunReported) and (r := e.settle()) is not None), None)

    try:
        wait_for(lambda: "unreachable" in worker.console(), timeout=30, what="the worker waiting for Redis")
        assert worker.proc.poll() is None
        redis.start()
        executor.launch(main_request(folder, "run-late"))
        task_pid = wait_for(lambda: _started(worker, "Late"), timeout=90, what="the run started on the worker")
        wait_for(lambda: (executor.enforce(), executor.waiting_on("run-late") is None)[1], timeout=10, what="started")
        redis.stop()
        result = wait_for(ended, timeout=30, what="the backstop to end the run")
        assert result.outcome is Outcome.INTERRUPTED
        assert "could not be heard from" in result.message and "ignored" in result.message
        assert executor.jobs == {} and list(executor.abandoned) != []
        _release(worker, "Late")
        wait_for(lambda: not pids_alive([task_pid]), timeout=15, what="the task's process to end")
        redis.start()
        wait_for(lambda: (executor.enforce(), not executor.abandoned)[1], timeout=30, what="the late result")
        late = [line for line in records.lines if "late result is ignored" in line]
        assert len(late) == 1 and "run-late" in late[0] and "'ok'" in late[0]
        assert len([e for e in posted if isinstance(e, RunReported)]) == 1  # the run was reported once only
        assert worker.proc.poll() is None
        for _ in range(5):  # nothing more is logged about it
            executor.enforce()
        assert len([line for line in records.lines if "late result" in line]) == 1
    finally:
        worker.stop()
        executor.close()
        logs.close()
        log.removeHandler(records)
