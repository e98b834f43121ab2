"""``taskautomation worker``: an RQ worker that runs task processes for a supervisor on another machine.

The worker's home holds its own copies of task folders (unpacked from bundles), envs and task logs; it never
schedules anything. Stopping it with SIGTERM lets the run in flight finish (RQ's warm shutdown); a second
SIGTERM or SIGKILL ends the work horse, whose monitor then kills the task's processes.

Policy: no worker process ever exits because Redis went away (docs/scaleout.md, "Redis outages").
* A busy worker keeps its work horse and the run: RQ's own worker quits on the first Redis error while it
  watches a horse (its heartbeats, the job's status once the horse ends); ``SurvivingWorker`` skips that
  bookkeeping while Redis is away and does what must be done (a dead horse's job marked failed) once it is back.
  The horse itself delivers the run's result once Redis answers (``job.py``).
* An idle worker waits for jobs through RQ's own reconnecting dequeue, with our backoff and our one line per
  outage instead of RQ's line per try.
* Whatever else RQ gives up on, ``serve_worker`` waits for Redis with backoff and starts the work loop again.
* A worker started while Redis is down waits for it too (a boot where the worker comes up before Redis); a
  password Redis refuses at start-up is a configuration error and ends the command with one line.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any, Sequence

from redis import Redis
from redis.exceptions import AuthenticationError, RedisError
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError, StopRequested
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

from ..errors import TaskAutomationError
from ..execution.cgroups import Containment
from ..paths import Paths

# Imported here, before RQ forks a work horse per job, so every horse inherits the job's modules instead of
# importing them again (tens of ms per run).
from . import job as job_module
from .outage import Backoff, Outage, outage_errors

# A busy worker writes its heartbeats this often (RQ: 30 s): an outage under a busy worker is noticed, and a
# Redis that is back is said to be, within seconds. The horse's own exit is noticed at once either way.
WATCH_INTERVAL_S = 5
PUBSUB_RETRY_S = 2.0  # RQ's own pace for its command channel's reconnects (a thread of its own)
_RQ_RETRY_LINE = "could not connect to Redis instance"


class SurvivingWorker(Worker):
    """An RQ ``Worker`` that rides out Redis outages (see the module policy).

    Every override below is a call RQ makes to Redis from the worker process (not the horse) while it waits
    for or watches a job; each one that RQ would let escape as "found an unhandled exception, quitting" is
    either skipped while Redis is away (state and heartbeats, which the next success rewrites) or retried until
    Redis is back (what records the end of a job).
    """

    stop_asked = False  # a SIGTERM/SIGINT came: RQ's own flag is only set when one comes while busy

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)

    @property
    def outage(self) -> Outage:
        return job_module.current_outage()  # the worker's; in a horse, the horse's own (fresh at the fork)

    # -- bookkeeping that can be skipped while Redis is away
    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # buffered: the pipeline's execute() is where Redis is reached
            super().heartbeat(timeout, pipeline=pipeline)
            return
        self.outage.tolerate(lambda: super(SurvivingWorker, self).heartbeat(timeout), doing="heart-beating")

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline=pipeline)
            return
        self._state = state  # what the worker itself acts on (a warm shutdown while busy) stays right
        self.outage.tolerate(lambda: super(SurvivingWorker, self).set_state(state), doing="recording its state")

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        self.outage.tolerate(
            lambda: super(SurvivingWorker, self).maintain_heartbeats(job, execution), doing=f"watching job {job.id}"
        )

    def set_shutdown_requested_date(self) -> None:
        self.outage.tolerate(super().set_shutdown_requested_date, doing="recording a shutdown request")

    def register_death(self) -> None:
        # Its key expires by itself; a restart under the same name re-registers it (see ``_serve``).
        self.outage.tolerate(super().register_death, doing="unregistering")

    def check_for_suspension(self, burst: bool) -> None:
        self.outage.tolerate(lambda: super(SurvivingWorker, self).check_for_suspension(burst), doing="starting")

    def run_maintenance_tasks(self) -> None:
        self.outage.tolerate(super().run_maintenance_tasks, doing="cleaning RQ's registries")

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        if not isinstance(exc, outage_errors()):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
            return
        self.outage.down(exc, doing="listening for commands")
        time.sleep(min(PUBSUB_RETRY_S, self.outage.backoff.max_s))  # this thread's pace between reconnects

    # -- waiting for a job: RQ reconnects by itself; Redis is awaited first, with our backoff
    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        self.outage.retry(self.connection.ping, doing="waiting for jobs", keep_going=lambda: not self.stop_asked)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    # -- watching a horse: the horse lives on through an outage; its end is recorded once Redis is back
    def monitor_work_horse(self, job: Job, queue: Queue, execution: Any) -> None:
        try:
            super().monitor_work_horse(job, queue, execution)
        except outage_errors() as exc:  # only after the horse ended: every call before it is tolerated above
            self.outage.down(exc, doing=f"recording the end of job {job.id}")
            self.outage.retry(
                lambda: self._settle(job, queue, execution),
                doing=f"recording the end of job {job.id}",
                keep_going=lambda: not self.stop_asked,
            )

    def _settle(self, job: Job, queue: Queue, execution: Any) -> None:
        """What RQ does for a horse that ended without recording its job: mark the job failed."""
        try:
            status = job.get_status()
        except (InvalidJobOperation, NoSuchJobError):
            return  # gone from Redis (a restart without persistence): nothing to record
        if status not in (JobStatus.FINISHED, JobStatus.FAILED):
            self.handle_job_failure(
                job, queue=queue, exc_string="the work horse ended while Redis was away", execution=execution
            )

    # -- in the horse: RQ's record of a finished job, retried instead of failing the job on a lost connection
    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        job.ended_at = ended = rq_now()
        self.outage.tolerate(lambda: job.heartbeat(ended, heartbeat_ttl), doing=f"ending job {job.id}")

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        self.outage.retry(
            lambda: super(SurvivingWorker, self).handle_job_success(job, queue, started_job_registry, execution),
            doing=f"recording job {job.id} as finished",
        )


class _QuietRetries(logging.Filter):
    """RQ logs every retry of its dequeue while Redis is away; the outage is logged once instead."""

    def __init__(self, outage: Outage) -> None:
        super().__init__()
        self.outage = outage

    def filter(self, record: logging.LogRecord) -> bool:
        if _RQ_RETRY_LINE not in str(record.msg):
            return True
        cause = record.args[1] if isinstance(record.args, tuple) and len(record.args) > 1 else record.getMessage()
        self.outage.down(ConnectionError(str(cause)), doing="waiting for jobs")
        return False


def safe_url(url: str) -> str:
    """The Redis URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def serve_worker(
    paths: Paths,
    *,
    redis_url: str,
    queues: Sequence[str],
    burst: bool = False,
    name: str | None = None,
    max_backoff_s: float = Backoff.max_s,
) -> int:
    """Run an RQ worker on ``queues`` until stopped (or, with ``burst``, until the queues are empty)."""
    paths.ensure()
    os.environ[job_module.WORKER_HOME_VAR] = str(paths.home)  # read by the job in each work horse
    # Our own lines at INFO; libraries (virtualenv's chatter, RQ's per-job lines) only when they warn.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s worker: %(message)s"
    )
    logging.getLogger("taskautomation").setLevel(logging.INFO)
    log = logging.getLogger("taskautomation.worker")
    if max_backoff_s <= 0:
        raise TaskAutomationError(f"worker: --max-backoff must be a positive number of seconds, not {max_backoff_s}")
    outage = Outage(safe_url(redis_url), log=log, backoff=Backoff(max_s=max_backoff_s))
    # A connect timeout: a Redis behind a silent network is an outage noticed in seconds, not minutes.
    try:
        connection = Redis.from_url(redis_url, socket_connect_timeout=5.0)
    except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
        raise TaskAutomationError(f"worker: --redis {outage.where!r} is not a Redis URL: {exc}") from None
    try:
        outage.retry(connection.ping, doing="starting")
    except AuthenticationError as exc:
        raise TaskAutomationError(f"Redis at {outage.where} refused the worker: {exc}") from None
    except RedisError as exc:
        raise TaskAutomationError(f"cannot use Redis at {outage.where}: {exc}") from None
    containment = Containment(paths.home)
    for line in containment.start():  # the home's parent groups; stale run groups of this home are removed
        log.info("containment: %s", line)
    job_module.configure_worker(containment=containment, outage=outage)
    worker = SurvivingWorker(
        [Queue(q, connection=connection, serializer=JSONSerializer) for q in queues],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        job_monitoring_interval=WATCH_INTERVAL_S,
    )
    worker.max_connection_wait_time = max_backoff_s  # RQ's own reconnect loop, while it waits for a job
    logging.getLogger("rq.worker").addFilter(_QuietRetries(outage))
    log.info("worker %s: home %s, queues %s", worker.name, paths.home, ", ".join(queues))
    outage.retry(lambda: _forget_dead_namesake(worker, log), doing="registering")
    try:
        _serve(worker, burst=burst)
    finally:
        containment.close()
    return 0


def _forget_dead_namesake(worker: SurvivingWorker, log: logging.Logger) -> None:
    """A worker of the same name that died on this machine without unregistering (SIGKILL, power loss, a
    restart by systemd) would block RQ's start for its key's TTL (minutes): mark it dead first."""
    death, hostname, pid = worker.connection.hmget(worker.key, ["death", "hostname", "pid"])
    host = hostname.decode() if isinstance(hostname, bytes) else hostname
    if pid is None or death is not None or host != socket.gethostname():
        return
    try:
        os.kill(int(pid), 0)
        return  # alive: RQ refuses the name, as it should
    except ProcessLookupError:
        pass
    except (PermissionError, ValueError):
        return
    log.info(
        "worker %s: its previous process (pid %s) died without unregistering; taking its name", worker.name, int(pid)
    )
    super(SurvivingWorker, worker).register_death()


def _serve(worker: SurvivingWorker, *, burst: bool) -> None:
    """RQ's work loop, started again after anything it gives up on, until a stop is asked for (or the queues
    are empty, with ``burst``)."""
    try:
        while _work_once(worker, burst=burst):
            worker.log.warning("Worker %s: RQ's work loop ended; starting it again", worker.name)
    except StopRequested:  # a SIGTERM while no work loop runs (RQ's handlers stay installed between two)
        return


def _work_once(worker: SurvivingWorker, *, burst: bool) -> bool:
    """One RQ work loop; True when it must run again (RQ gave up on something), False when the worker is done."""
    outage = worker.outage
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    except outage_errors() as exc:  # Redis went away while RQ started its loop (registering, subscribing)
        outage.down(exc, doing="starting its work loop")
    if worker.stop_asked:
        return False
    # RQ ended its loop on its own: with burst, because the queues are empty (checked once Redis answers);
    # otherwise because it gave up on an error, Redis most likely.
    empty = outage.retry(
        lambda: all(queue.count == 0 for queue in worker.queues),
        doing="checking the queues",
        keep_going=lambda: not worker.stop_asked,
    )
    if worker.stop_asked or (burst and empty):
        return False
    # Its key may have outlived the loop (Redis away when it ended): mark it dead so it can be born again.
    outage.retry(super(SurvivingWorker, worker).register_death, doing="registering again")
    return True
