"""Scale-out on RQ: a real redis-server on loopback, real worker processes, a real supervisor."""

from __future__ import annotations

import dataclasses
import json
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from bench.redisproc import RedisServer
from supervisor.errors import SpawnError
from supervisor.execution.executor import RunRequest
from supervisor.logsetup import TaskLogs
from supervisor.model import Trigger
from supervisor.scaleout.executor import RQExecutor
from tests.support.harness import SupervisorProcess, cli, pids_alive
from tests.support.helpers import build_wheel, wait_for, write_task
from tests.support.rqworkers import Worker, main_request, rq_executor, running_redis

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def workers(tmp_path: Path, redis: RedisServer) -> Iterator[list[Worker]]:
    started = [Worker(tmp_path / f"worker{i}", redis.url, f"w{i}-{tmp_path.name[-12:]}") for i in (1, 2)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def rq_home(home: Path, redis: RedisServer) -> Path:
    (home / "taskautomation.ini").write_text(f"[Supervisor]\nExecutor = rq\nRedisUrl = {redis.url}\n")
    return home


def test_conflicting_pins_run_apart_on_two_workers(
    home: Path, tmp_path: Path, redis: RedisServer, workers: list[Worker]
) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "pinned", "1.0")
    build_wheel(wheels, "pinned", "2.0")
    # Each run takes a second, so two due runs overlap and the two workers share the work.
    main = "def main():\n    import time, pinned\n    time.sleep(1)\n    return 'pinned ' + pinned.__version__\n"
    for name, version in (("Old", "1.0"), ("New", "2.0")):
        write_task(
            home / "Tasks",
            name,
            main=main,
            config="[Frequency]\nEveryXMinutes = 0.03\n",
            requirements=f"--no-index\n--find-links {wheels}\npinned=={version}\n",
        )
    with SupervisorProcess(rq_home(home, redis)) as sup:
        for name, version in (("Old", "1.0"), ("New", "2.0")):
            wait_for(
                lambda name=name: [r for r in sup.history(name) if r["outcome"] == "ok"],
                timeout=60,
                what=f"an ok run of {name}",
            )
            runs = [r for r in sup.history(name) if r["outcome"] == "ok"]
            assert runs[0]["message"] == f"pinned {version}"
        wait_for(
            lambda: all(w.task_log("Old") or w.task_log("New") for w in workers),
            timeout=60,
            what="both workers running tasks",
        )
        # Each worker created its own home, saying so.
        assert all(f"created the home {w.home}" in w.out.read_text() for w in workers)
        # The worker's log lines of a run come back into the supervisor's task log.
        run_id = [r for r in sup.history("Old") if r["outcome"] == "ok"][0]["run_id"]
        assert f"[run {run_id}] started" in sup.task_log("Old")


def test_a_slot_is_enqueued_once_even_when_two_supervisors_race(home: Path, redis: RedisServer) -> None:

    folder = write_task(home / "Tasks", "Once")
    logs = TaskLogs(home / "logs" / "tasks", max_bytes=10**6, backups=1)

    def executor() -> RQExecutor:
        return rq_executor(home, redis.url, task_logs=logs, home_id="samehome")

    due = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)

    def request(run_id: str) -> RunRequest:
        return main_request(folder, run_id, trigger=Trigger.SCHEDULE, due=due)

    first, second = executor(), executor()
    try:
        first.launch(request("run-a"))
        with pytest.raises(SpawnError, match="already enqueued"):
            second.launch(request("run-b"))
        from rq import Queue
        from rq.serializers import JSONSerializer

        assert Queue("default", connection=first.redis, serializer=JSONSerializer).count == 1
        # Unchanged content is uploaded once; a changed folder is a new bundle.
        assert len(first.redis.keys("taskautomation:bundle:*")) == 1
        (folder / "main.py").write_text("def main():\n    return 'changed'\n")
        first.launch(dataclasses.replace(request("run-c"), due=None))
        assert len(first.redis.keys("taskautomation:bundle:*")) == 2
        first.launch(dataclasses.replace(request("run-d"), due=None))
        assert len(first.redis.keys("taskautomation:bundle:*")) == 2
    finally:
        first.close()
        second.close()
        logs.close()


def test_worker_killed_mid_run_leaves_no_process_and_the_run_is_interrupted(
    home: Path, redis: RedisServer, workers: list[Worker]
) -> None:
    # The task starts a grandchild that would outlive everything if containment failed.
    main = """
        def main():
            import subprocess, sys, time, os
            child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])
            open(os.path.join(os.environ['TASK_OUTPUT_DIR'], 'child.pid'), 'w').write(str(child.pid))
            time.sleep(300)
        """
    write_task(home / "Tasks", "Stuck", main=main, config="[Frequency]\nEveryXMinutes = 600\n")
    with SupervisorProcess(rq_home(home, redis)) as sup:

        def worker_with_pid() -> tuple[Worker, int] | None:
            for worker in workers:
                pid_file = worker.home / "Tasks" / "Stuck" / "Output" / "child.pid"
                if pid_file.exists() and pid_file.read_text():
                    return worker, int(pid_file.read_text())
            return None

        worker, child = wait_for(worker_with_pid, timeout=60, what="the task's grandchild on a worker")
        # The supervisor learns that a worker took the job at its next poll of Redis (every 0.2 s).
        wait_for(lambda: sup.task_status("Stuck")["state"] == "running", timeout=10, what="state running")
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)
        wait_for(lambda: not pids_alive([child]), timeout=15, what="the grandchild to die with its worker")
        runs = wait_for(
            lambda: [r for r in sup.history("Stuck") if r["outcome"]], timeout=30, what="an outcome for the run"
        )
        assert runs[0]["outcome"] == "interrupted"
        assert "worker" in runs[0]["message"]


def test_a_run_waiting_for_a_worker_shows_as_queued(home: Path, redis: RedisServer) -> None:
    write_task(home / "Tasks", "Waiting", config="[Frequency]\nEveryXMinutes = 600\n\n[Global]\nQueue = nobody\n")
    with SupervisorProcess(rq_home(home, redis)) as sup:  # no worker serves the queue "nobody"
        status = wait_for(
            lambda: (s := sup.task_status("Waiting"))["state"] == "queued" and s,
            timeout=30,
            what="the run to show as queued",
        )
        assert "RQ queue 'nobody'" in status["why"]
    # Shutdown cancels the job still in the queue: the run ends killed, nothing is left in Redis's queue.
    runs = json.loads(cli_history(home, "Waiting"))["runs"]
    assert runs[0]["outcome"] == "killed" and "still queued" in runs[0]["message"]


def test_redis_down_fails_runs_clearly_and_the_supervisor_recovers(
    home: Path, tmp_path: Path, redis: RedisServer, workers: list[Worker]
) -> None:
    write_task(home / "Tasks", "Tick", config="[Frequency]\nEveryXMinutes = 0.02\n")
    with SupervisorProcess(rq_home(home, redis)) as sup:
        wait_for(lambda: [r for r in sup.history("Tick") if r["outcome"] == "ok"], timeout=60, what="an ok run")

        def between_runs() -> bool:
            # No run in flight, and the next one far enough away: a run in flight would rightly wait for Redis
            # (up to the 300 s backstop) and hold the next ones back as overlaps.
            status = sup.task_status("Tick")
            if status["running"] or status["state"] in ("running", "queued") or not status["next_run"]:
                return False
            return datetime.fromisoformat(status["next_run"]) - datetime.now(timezone.utc) > timedelta(seconds=0.5)

        wait_for(between_runs, timeout=30, what="a moment between two runs")
        redis.stop()
        failed = wait_for(
            lambda: [r for r in sup.history("Tick") if r["outcome"] == "failed"],
            timeout=30,
            what="a failed run while Redis is down",
        )
        assert "cannot enqueue" in failed[0]["message"] and f"127.0.0.1:{redis.port}" in failed[0]["message"]
        redis.start()
        oks = len([r for r in sup.history("Tick") if r["outcome"] == "ok"])
        wait_for(
            lambda: len([r for r in sup.history("Tick") if r["outcome"] == "ok"]) > oks,
            timeout=60,
            what="runs ok again after Redis came back",
        )
        assert json.dumps(sup.status())  # the supervisor still answers
        assert sup.proc is not None and sup.proc.poll() is None


def cli_history(home: Path, task: str) -> str:
    result = cli(home, "history", task, "--json")
    assert result.returncode == 0, result.stderr
    return result.stdout


CHAIN_MAIN = """\
import json, os

def main():
    return json.dumps({k: v for k, v in os.environ.items() if k.startswith("TASK_UPSTREAM_")}, sort_keys=True)
"""


def test_a_chain_runs_on_workers_with_the_upstream_in_its_environment(
    home: Path, redis: RedisServer, workers: list[Worker]
) -> None:
    write_task(home / "Tasks", "up", config="[Frequency]\nEveryXMinutes = 1440\n")
    write_task(home / "Tasks", "down", main=CHAIN_MAIN, config="[Frequency]\nAfter = up\n")
    with SupervisorProcess(rq_home(home, redis)) as sup:
        (down,) = wait_for(
            lambda: [r for r in sup.history("down") if r["outcome"]], timeout=90, what="the downstream run on RQ"
        )
        (up,) = sup.history("up")
    assert (up["outcome"], down["outcome"], down["trigger"], down["upstream"]) == ("ok", "ok", "after", up["run_id"])
    assert json.loads(down["message"]) == {
        "TASK_UPSTREAM_OUTCOME": "ok",
        "TASK_UPSTREAM_RUN_ID": up["run_id"],
        "TASK_UPSTREAM_TASK": "up",
    }
