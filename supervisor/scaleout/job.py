"""The RQ job that runs one task process on a worker machine, the same way the supervisor runs it locally.

Runs inside an RQ work horse (a process the worker forks per job). Policy:
* The task folder arrives as a content-addressed bundle (``bundle.py``) fetched from Redis and unpacked into
  the worker's own home (``WORKER_HOME/Tasks/NAME``) only when its digest changed; the task's ``Output/`` on
  the worker is kept across versions.
* The env is built with the same ``EnvManager`` as locally (same keys, markers and installers), in the worker's
  ``envs/``; the process runs through the same ``LocalExecutor``, shim and monitor with the same limits, so
  the outcome, exit code, message and durations mean exactly what they mean locally.
* The horse arms ``PR_SET_PDEATHSIG``: when the worker process dies (SIGKILL included) the horse dies too, its
  monitor sees the supervisor-side pipe close and kills the task's tree; no process outlives its worker.
* While the run is in flight the horse refreshes ``alive_key(job_id)`` every ``HEARTBEAT_S`` (TTL
  ``ALIVE_TTL_S``): the supervisor treats a started job whose key expired as lost (``interrupted``). It also
  watches ``stop_key(job_id)``: the supervisor asks for a stop (shutdown) by setting it, and the run is
  stopped with its own grace, like a local run.
* The result is a JSON-able dict (``RunResult`` fields plus the run's log lines, at most ``LOG_TAIL_BYTES``).
  The horse writes it to ``result_key(job_id)`` itself before RQ records the job: the supervisor reads that
  key first, so a result survives RQ's own bookkeeping failing and a Redis restarted empty under the run.
* A Redis outage never ends a run here: the task goes on, the heartbeat skips its beats (the supervisor's
  backstop decides how long it waits), and fetching the bundle and delivering the result wait for Redis with
  the worker's backoff (``outage.py``), however long it takes.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import json
import logging
import os
import queue
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..clock import SystemClock
from ..envs.manager import EnvManager
from ..errors import TaskAutomationError
from ..events import Event, RunReported
from ..execution.cgroup_layout import Layout
from ..execution.cgroups import Containment
from ..execution.executor import LocalExecutor, RunRequest
from ..execution.outcome import StopCause, StopRequest
from ..execution.secrets import SecretStore
from ..logsetup import TaskLogs
from ..model import EnvStatus, Limits, Outcome, RunMode, RunResult, Trigger
from ..paths import Paths
from .bundle import Bundle, BundleError, extract_bundle
from .outage import Outage, outage_errors

WORKER_HOME_VAR = "TASKAUTOMATION_WORKER_HOME"
HEARTBEAT_S = 1.0
ALIVE_TTL_S = 5.0  # a started job whose alive key is older than this is taken as lost by the supervisor
LOG_TAIL_BYTES = 64 * 1024
RESULT_TTL_S = 24 * 3600  # as long as RQ keeps the job's own result
PR_SET_PDEATHSIG = 1


class _WorkerSetup:
    """What the worker process prepares once, before RQ forks a work horse per job.

    RQ calls the job function by name in the horse, so the only way to hand it the worker's containment (the
    home's parent cgroups, set up and logged once at worker start) is state inherited through the fork.
    """

    containment: Containment | None = None
    outage: Outage | None = None


def configure_worker(*, containment: Containment, outage: Outage) -> None:
    """Called once by ``serve_worker`` before it starts taking jobs."""
    _WorkerSetup.containment = containment
    _WorkerSetup.outage = outage
    os.register_at_fork(after_in_child=_fresh_outage)


def _fresh_outage() -> None:
    # A thread of the worker may hold the outage's lock at the moment RQ forks: the horse starts its own, and
    # leaves saying so to its worker (one line per outage, not one per process).
    if _WorkerSetup.outage is not None:
        _WorkerSetup.outage = _WorkerSetup.outage.fresh(quiet=True)


def current_outage() -> Outage:
    """This process's outage tracker (outside ``taskautomation worker``: one of its own, logging as the worker)."""
    if _WorkerSetup.outage is None:
        _WorkerSetup.outage = Outage("Redis", log=logging.getLogger("taskautomation.worker"))
    return _WorkerSetup.outage


def alive_key(job_id: str) -> str:
    return f"taskautomation:alive:{job_id}"


def stop_key(job_id: str) -> str:
    return f"taskautomation:stop:{job_id}"


def result_key(job_id: str) -> str:
    return f"taskautomation:result:{job_id}"


def limits_to_json(limits: Limits) -> dict[str, Any]:
    return dataclasses.asdict(limits)


def limits_from_json(data: dict[str, Any]) -> Limits:
    """Tolerant of fields one side does not know (a supervisor and its workers may differ by a version)."""
    known = {f.name for f in dataclasses.fields(Limits)}
    return Limits(**{k: v for k, v in data.items() if k in known})


def result_to_json(result: RunResult, log_lines: list[str]) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data.update(
        mode=result.mode.value, outcome=result.outcome.value, finished=result.finished.isoformat(), log=log_lines
    )
    return data


def result_from_json(data: dict[str, Any]) -> tuple[RunResult, list[str]]:
    known = {f.name for f in dataclasses.fields(RunResult)}
    fields = {k: v for k, v in data.items() if k in known}
    fields.update(
        mode=RunMode(data["mode"]), outcome=Outcome(data["outcome"]), finished=datetime.fromisoformat(data["finished"])
    )
    return RunResult(**fields), [str(line) for line in data.get("log", [])]


class _Tail(logging.Handler):
    """Keeps the last ``LOG_TAIL_BYTES`` of what the run logs, to send back with the result."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque()
        self.size = 0

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > LOG_TAIL_BYTES and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()) + 1


def _die_with_parent() -> None:
    """The horse dies when its worker dies, so the worker's death reaches the task's monitor at once."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker died before the signal was armed
        os._exit(1)


def _checkout(redis: Any, paths: Paths, task: str, digest: str) -> Path:
    """The task folder at bundle ``digest`` in the worker's home, unpacked only when it changed."""
    folder = paths.task_dir(task)
    marker = paths.state / "bundles" / f"{task}.sha256"
    if folder.is_dir() and marker.is_file() and marker.read_text().strip() == digest:
        return folder
    data = current_outage().retry(lambda: redis.get(Bundle(digest=digest, data=b"").key), doing=f"fetching {task!r}")
    if data is None:
        raise BundleError(f"task {task!r}: bundle {digest[:12]} is not in Redis (expired?)")
    extract_bundle(data, folder, digest=digest)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest + "\n")
    return folder


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of an RQ job (``supervisor.scaleout.job.run_job``); see the module policy."""
    from rq import get_current_job

    _die_with_parent()
    job = get_current_job()
    assert job is not None, "run_job runs inside an RQ worker"
    redis = job.connection
    paths = Paths(Path(os.environ.get(WORKER_HOME_VAR) or os.getcwd()).resolve())
    paths.ensure()
    task = str(payload["task"])
    logger = logging.getLogger("taskautomation.worker")
    task_logs = TaskLogs(paths.task_logs, max_bytes=5 * 1024 * 1024, backups=3)
    tail = _Tail()
    task_logs.get(task).addHandler(tail)
    inbox: queue.SimpleQueue[Event | str] = queue.SimpleQueue()
    heartbeat = _Heartbeat(redis, job.id, inbox)
    clock = SystemClock()
    started = clock.monotonic()
    try:
        try:
            folder = _checkout(redis, paths, task, str(payload["bundle"]))
            envs = EnvManager(paths, installer=str(payload.get("installer", "uv")), logger=logger)
            status = envs.ensure(task=task, requirements=folder / "requirements.txt", task_dir=folder)
        except (TaskAutomationError, BundleError, OSError) as exc:
            failed = _env_failed(payload, exc, finished=clock.now(), duration_s=clock.monotonic() - started)
            return _deliver(redis, job.id, result_to_json(failed, list(tail.lines)))
        request = _request(payload, folder=folder, paths=paths, status=status)
        executor = _executor(paths, payload, task_logs=task_logs, logger=logger, clock=clock, post=inbox.put)
        executor.launch(request)
        return _deliver(redis, job.id, result_to_json(_run_to_end(executor, inbox, clock), list(tail.lines)))
    finally:
        heartbeat.stop()
        task_logs.close()


def _deliver(redis: Any, job_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Write the result where the supervisor looks first, waiting for Redis as long as it takes (the heartbeat
    goes on meanwhile); RQ gets the same dict as the job's return value (what an older supervisor reads)."""
    text = json.dumps(data)
    current_outage().retry(lambda: redis.set(result_key(job_id), text, ex=RESULT_TTL_S), doing=f"delivering {job_id}")
    return data


class _Heartbeat:
    """Refreshes the job's alive key every ``HEARTBEAT_S`` and posts ``_STOP`` once a stop is asked for."""

    def __init__(self, redis: Any, job_id: str, inbox: queue.SimpleQueue[Event | str]) -> None:
        self._redis = redis
        self._job_id = job_id
        self._inbox = inbox
        self._stop = threading.Event()
        self._outage = current_outage()
        self._beat_once()
        self._thread = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beat_once()

    def _beat_once(self) -> None:
        try:
            self._redis.set(alive_key(self._job_id), "1", px=int(ALIVE_TTL_S * 1000))
            stop = self._redis.exists(stop_key(self._job_id))
        except outage_errors() as exc:  # Redis away: the run goes on; the beats resume when it is back
            self._outage.down(exc, doing=f"running job {self._job_id}")
            return
        except Exception:  # noqa: BLE001 - any other Redis trouble must not end the heartbeat thread either
            return
        self._outage.up()
        if stop:
            self._inbox.put(_STOP)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * HEARTBEAT_S)


def _env_failed(payload: dict[str, Any], exc: Exception, *, finished: datetime, duration_s: float) -> RunResult:
    """The result of a job whose task folder or env could not be made ready on this worker."""
    return RunResult(
        run_id=str(payload["run_id"]),
        task=str(payload["task"]),
        mode=RunMode(payload["mode"]),
        env_key=None,
        outcome=Outcome.ENV_FAILED,
        summary=f"env-failed on the worker: {exc}",
        finished=finished,
        duration_s=duration_s,
        message=str(exc),
    )


def _executor(
    paths: Paths,
    payload: dict[str, Any],
    *,
    task_logs: TaskLogs,
    logger: logging.Logger,
    clock: SystemClock,
    post: Callable[[Event], None],
) -> LocalExecutor:
    """The worker's executor for one job: the same LocalExecutor as the supervisor's, in the worker's home."""
    # The worker's own .env files (its home's and Tasks/NAME/.env, which bundles never overwrite) give the run
    # its secrets here, masked in its log lines and message exactly as on the supervisor.
    secrets = SecretStore(paths.home_secrets, paths.task_secrets, warn=logger.warning)
    # Outside ``taskautomation worker`` (someone's own RQ worker) there is no prepared cgroup parent: the run
    # is then contained by rlimits and its monitor only.
    containment = _WorkerSetup.containment or Containment(paths.home, layout=Layout())
    return LocalExecutor(
        home=paths.home,
        cookie_prefix=paths.run_cookie_prefix,
        task_logs=task_logs,
        logger=logger,
        clock=clock,
        post=post,
        output_cap_bytes=int(payload.get("output_cap_bytes", 1024 * 1024)),
        secrets=secrets,
        containment=containment,
    )


def _request(payload: dict[str, Any], *, folder: Path, paths: Paths, status: EnvStatus) -> RunRequest:
    """The supervisor's request, re-made with this worker's folder and env."""
    assert status.python is not None  # ensure() returns a ready env or raises
    task = str(payload["task"])
    return RunRequest(
        task=task,
        run_id=str(payload["run_id"]),
        mode=RunMode(payload["mode"]),
        trigger=Trigger(payload["trigger"]),
        task_dir=folder,
        output_dir=paths.task_output(task),
        env_key=status.key,
        python=status.python,
        env_dir=status.python.parent.parent,
        limits=limits_from_json(payload["limits"]),
        variables=tuple((str(k), str(v)) for k, v in payload.get("variables", ())),
        params=tuple((str(key), str(value)) for key, value in payload.get("params") or ()),
    )


def _run_to_end(executor: LocalExecutor, inbox: queue.SimpleQueue[Event | str], clock: SystemClock) -> RunResult:
    """Drive the one launched run to its result: limits enforced, a stop passed on, as the loop does locally."""
    try:
        while True:
            wake = executor.next_wakeup()
            event = _next(inbox, None if wake is None else max(0.0, wake - clock.monotonic()))
            if event == _STOP:
                executor.stop_all(StopRequest(StopCause.SHUTDOWN, "stopped by supervisor shutdown"))
            elif isinstance(event, RunReported):
                ended = event.settle()
                if ended is not None:
                    return ended
            executor.enforce()
    finally:
        if executor.active:  # only when the run did not settle: close() sweeps /proc for its cookie
            executor.close()


_STOP = "stop"


def _next(inbox: queue.SimpleQueue[Event | str], timeout: float | None) -> Event | str | None:
    try:
        return inbox.get(timeout=timeout)
    except queue.Empty:
        return None
