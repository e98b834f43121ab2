"""``RQExecutor``: runs of ``main()`` execute on RQ workers; the supervisor stays the only scheduler.

Policy:
* ``initialize()`` runs here, through the local executor: it is the supervisor's load check of a task and
  must not wait for a worker to be free. Every run of ``main()`` is an RQ job on the task's ``[Global] Queue``.
* A slot is enqueued at most once, even when two supervisors race: the job id is the task plus its due time
  (a manual run uses its run id), claimed with ``SET NX`` before the job is enqueued.
* The task folder travels as a content-addressed bundle, uploaded only when its content changed (``SET NX``
  on the digest; a known bundle's TTL is refreshed instead).
* Jobs are polled every ``POLL_S`` from the loop thread with short socket timeouts, so a slow or vanished
  Redis cannot hold the loop up for long. The horse's result key (or, from a worker of an earlier version,
  RQ's return value) reports the worker's ``RunResult``. A live alive key means the run goes on, whatever RQ's
  own record says. Without one, a started job (its worker stopped heart-beating), a job RQ failed (work horse
  killed) and a job that vanished (Redis restarted empty) end as ``interrupted`` — the retry policy decides
  what follows. Right after an outage the beats get ``ALIVE_TTL_S`` to resume before their absence counts.
* The in-flight backstop: while Redis cannot be reached, a run waits for it up to ``lost_after_s``
  (``WORKER_SILENT_AFTER_S``, 300 s) from the last poll that reached it, then ends as ``interrupted``. Its job
  is still followed once Redis is back: a late result is logged once and ignored, a job still queued is
  cancelled.
* A run that cannot be enqueued (Redis down) fails at once with a message naming the Redis URL; the loop
  records it as ``failed`` and goes on, and the next launch reconnects.
* Stops (shutdown) reach a started run through its stop key, and it is stopped with its own grace on the
  worker; a job still waiting in the queue is cancelled and ends as ``killed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

from ..clock import Clock
from ..errors import SpawnError
from ..events import Event, RunReported
from ..execution.executor import Executor, RunRequest
from ..execution.outcome import StopRequest
from ..logsetup import TaskLogs
from ..model import Outcome, RunMode, RunResult
from .bundle import Bundle, make_bundle
from .job import ALIVE_TTL_S, RESULT_TTL_S, alive_key, limits_to_json, result_from_json, result_key, stop_key

POLL_S = 0.2
WORKER_SILENT_AFTER_S = 300.0  # the in-flight backstop: a run not heard from for this long ends interrupted
BUNDLE_TTL_S = 7 * 24 * 3600
SLOT_TTL_S = 7 * 24 * 3600
JOB_FUNCTION = "supervisor.scaleout.job.run_job"


@dataclass
class _Job:
    request: RunRequest
    job_id: str
    started_mono: float
    heard_mono: float  # the last poll that reached Redis (the backstop counts from there)
    seen_started: bool = False
    stop: StopRequest | None = None


@dataclass(frozen=True)
class _Seen:
    """What one poll found about one job."""

    rq_job: Any  # rq's Job, or None when Redis has no such job
    status: str | None
    beat: bytes | None  # the horse's alive key
    result: bytes | None  # the horse's result key


@dataclass(frozen=True)
class _Abandoned:
    """A run the backstop ended: followed only to log a late result once, or to cancel a job still queued."""

    task: str
    run_id: str
    job_id: str
    until_mono: float


def job_id_for(home_id: str, request: RunRequest) -> str:
    """Task + due time: the same slot always maps to the same job id (manual runs: their run id)."""
    # RQ allows letters, digits, _ and - in ids: the task name is folded into that, plus a hash against clashes.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.task)[:40]
    digest = hashlib.sha256(request.task.encode()).hexdigest()[:8]
    slot = (
        request.due.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if request.due is not None
        else f"manual-{request.run_id}"
    )
    return f"ta-{home_id}-{name}-{digest}-{slot}"


class RQExecutor:
    """The ``Executor`` seam for a pool of RQ workers behind one Redis (see the module policy)."""

    def __init__(
        self,
        *,
        local: Executor,
        redis_url: str,
        home_id: str,
        installer: str,
        output_cap_bytes: int,
        task_logs: TaskLogs,
        logger: logging.Logger,
        clock: Clock,
        post: Callable[[Event], None],
        connect: Callable[[str], Any] | None = None,
        lost_after_s: float = WORKER_SILENT_AFTER_S,
    ) -> None:
        from redis import Redis
        from rq.serializers import JSONSerializer

        self.local = local
        self.redis_url = redis_url
        self.home_id = home_id
        self.installer = installer
        self.output_cap_bytes = output_cap_bytes
        self.task_logs = task_logs
        self.log = logger
        self.clock = clock
        self.post = post
        self.serializer = JSONSerializer
        self.redis = (connect or (lambda url: Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)))(
            redis_url
        )
        self.jobs: dict[str, _Job] = {}
        self.next_poll: float | None = None
        self.redis_down_since: float | None = None
        self.grace_until = 0.0  # after an outage: beats that are missing need not mean a lost worker yet
        self.lost_after_s = lost_after_s
        self.abandoned: dict[str, _Abandoned] = {}

    # ------------------------------------------------------------------ launch
    def launch(self, request: RunRequest) -> None:
        if request.mode is RunMode.INITIALIZE:
            self.local.launch(request)
            return
        from redis.exceptions import RedisError
        from rq import Queue

        job_id = job_id_for(self.home_id, request)
        try:
            bundle = make_bundle(request.task_dir)
            self._upload(bundle)
            if not self.redis.set(f"taskautomation:slot:{job_id}", request.run_id, nx=True, ex=SLOT_TTL_S):
                raise SpawnError(
                    f"task {request.task!r}: slot {job_id} was already enqueued (by another "
                    "supervisor on the same Redis?); not running it twice"
                )
            Queue(request.queue, connection=self.redis, serializer=self.serializer).enqueue(
                JOB_FUNCTION,
                self._payload(request, bundle),
                job_id=job_id,
                job_timeout=-1,
                result_ttl=24 * 3600,
                failure_ttl=24 * 3600,
                description=f"{request.task} {request.run_id}",
            )
        except RedisError as exc:
            raise SpawnError(f"task {request.task!r}: cannot enqueue the run on {self.safe_url()}: {exc}") from exc
        except OSError as exc:
            raise SpawnError(f"task {request.task!r}: cannot bundle {request.task_dir}: {exc}") from exc
        mono = self.clock.monotonic()
        self.jobs[request.run_id] = _Job(request=request, job_id=job_id, started_mono=mono, heard_mono=mono)
        self.next_poll = mono + POLL_S
        self.task_logs.get(request.task).info(
            "[run %s] queued on %s (job %s, bundle %s)", request.run_id, request.queue, job_id, bundle.digest[:12]
        )
        self.log.info("task %r: run %s queued on RQ queue %r", request.task, request.run_id, request.queue)

    def _upload(self, bundle: Bundle) -> None:
        # EXPIRE answers whether the content is there already, without sending it again; SET NX keeps a
        # racing supervisor's identical upload from being written twice.
        if not self.redis.expire(bundle.key, BUNDLE_TTL_S):
            self.redis.set(bundle.key, bundle.data, nx=True, ex=BUNDLE_TTL_S)

    def _payload(self, request: RunRequest, bundle: Bundle) -> dict[str, Any]:
        return {
            "task": request.task,
            "run_id": request.run_id,
            "mode": request.mode.value,
            "trigger": request.trigger.value,
            "bundle": bundle.digest,
            "limits": limits_to_json(request.limits),
            "installer": self.installer,
            "output_cap_bytes": self.output_cap_bytes,
            "variables": [list(pair) for pair in request.variables],
            "params": [list(pair) for pair in request.params],  # run-now --env: the worker's run gets them
        }

    def safe_url(self) -> str:
        """The Redis URL without its password, for messages."""
        scheme, sep, rest = self.redis_url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else self.redis_url

    def waiting_on(self, run_id: str) -> str | None:
        job = self.jobs.get(run_id)
        if job is None:
            return self.local.waiting_on(run_id)
        return None if job.seen_started else f"waiting for a worker on RQ queue {job.request.queue!r}"

    # ------------------------------------------------------------------ polling
    def next_wakeup(self) -> float | None:
        following = self.jobs or self.abandoned
        moments = [m for m in (self.local.next_wakeup(), self.next_poll if following else None) if m is not None]
        return min(moments) if moments else None

    def enforce(self) -> None:
        self.local.enforce()
        mono = self.clock.monotonic()
        if not (self.jobs or self.abandoned) or self.next_poll is None or mono < self.next_poll:
            return
        self.next_poll = mono + POLL_S
        from redis.exceptions import RedisError

        jobs, abandoned = list(self.jobs.values()), list(self.abandoned.values())
        try:
            seen = self._fetch([j.job_id for j in jobs] + [a.job_id for a in abandoned])
        except RedisError as exc:
            self._unreachable(exc, mono, jobs)
            return
        if self.redis_down_since is not None:
            self.log.info("Redis at %s reachable again after %.0f s", self.safe_url(), mono - self.redis_down_since)
            self.redis_down_since = None
            # Beats could not be written while Redis was away (or were lost with it): give them time to resume.
            self.grace_until = mono + ALIVE_TTL_S
        for job, state in zip(jobs, seen):
            job.heard_mono = mono
            self._check(job, state)
        for gone, state in zip(abandoned, seen[len(jobs) :]):
            self._check_abandoned(gone, state)

    def _fetch(self, job_ids: list[str]) -> list[_Seen]:
        """One round trip per kind: the RQ jobs, their alive keys and their result keys."""
        from rq.job import Job

        fetched = Job.fetch_many(job_ids, connection=self.redis, serializer=self.serializer)
        alive = self.redis.mget([alive_key(i) for i in job_ids]) if job_ids else []
        results = self.redis.mget([result_key(i) for i in job_ids]) if job_ids else []
        seen = []
        for rq_job, beat, result in zip(fetched, alive, results):
            status = rq_job.get_status(refresh=False) if rq_job is not None else None
            text = None if status is None else str(getattr(status, "value", status))
            seen.append(_Seen(rq_job=rq_job, status=text, beat=beat, result=result))
        return seen

    def _unreachable(self, exc: Exception, mono: float, jobs: list[_Job]) -> None:
        """Redis is away: runs in flight wait for it, up to the backstop each."""
        if self.redis_down_since is None:
            self.redis_down_since = mono
            self.log.warning(
                "Redis at %s unreachable (%s): %d run(s) in flight wait for it (for up to %.0f s each)",
                self.safe_url(),
                exc,
                len(jobs),
                self.lost_after_s,
            )
        for job in jobs:
            if mono - job.heard_mono >= self.lost_after_s:
                why = (
                    f"its worker could not be heard from for {mono - job.heard_mono:.0f} s (Redis at "
                    f"{self.safe_url()} unreachable); a result that arrives later is ignored"
                )
                self._interrupted(job, why)
                self.abandoned[job.job_id] = _Abandoned(
                    task=job.request.task, run_id=job.request.run_id, job_id=job.job_id, until_mono=mono + RESULT_TTL_S
                )

    def _check(self, job: _Job, seen: _Seen) -> None:
        mono = self.clock.monotonic()
        if seen.result is not None:  # the horse's own report comes first: RQ's bookkeeping may have failed
            value = _decoded(seen.result)
            if value is None:
                self._interrupted(job, "the worker's result could not be read (not a JSON object)")
            else:
                self._finished(job, value)
        elif seen.status == "finished":  # a worker of an earlier version: its result is RQ's return value
            value = seen.rq_job.return_value()
            if isinstance(value, dict):
                self._finished(job, value)
            else:
                self._interrupted(job, "the worker returned no result")
        elif seen.beat is not None:  # the horse lives, whatever RQ's own record says
            job.seen_started = True
        elif mono < self.grace_until:
            return
        elif seen.status in ("failed", "stopped", "canceled"):
            detail = (seen.rq_job.exc_info or "").strip().splitlines()
            self._interrupted(job, f"the RQ job {seen.status}: {detail[-1] if detail else 'no detail'}")
        elif seen.status is None:
            self._interrupted(job, "the RQ job vanished from Redis (restarted without persistence?)")
        elif seen.status == "started" and (job.seen_started or mono - job.started_mono > 10.0):
            self._interrupted(job, "its worker stopped responding (killed or lost mid-run)")

    def _finished(self, job: _Job, value: dict[str, Any]) -> None:
        result, lines = result_from_json(value)
        logger = self.task_logs.get(job.request.task)
        for line in lines:
            logger.info("%s", line)
        self._end(job, result)

    def _check_abandoned(self, gone: _Abandoned, seen: _Seen) -> None:
        """A run ended by the backstop: its late result is logged once and ignored; a job still queued is
        cancelled (nobody waits for it any more); anything else is forgotten once RQ is done with it."""
        mono = self.clock.monotonic()
        if seen.result is not None:
            outcome = str((_decoded(seen.result) or {}).get("outcome", "?"))
            self.log.warning(
                "task %r: run %s reported %r from its worker after it was recorded interrupted (the worker could "
                "not be heard from for %.0f s); the late result is ignored",
                gone.task,
                gone.run_id,
                outcome,
                self.lost_after_s,
            )
        elif seen.status in ("queued", "deferred", "scheduled"):
            from rq.job import Job

            try:
                Job.fetch(gone.job_id, connection=self.redis, serializer=self.serializer).cancel()
            except Exception as exc:  # noqa: BLE001 - taken by a worker meanwhile, or Redis gone again: next poll
                self.log.debug("cancel of job %s: %s", gone.job_id, exc)
                return
            self.log.info("task %r: cancelled the queued job of run %s (recorded interrupted)", gone.task, gone.run_id)
        elif (seen.beat is not None or mono < self.grace_until) and mono < gone.until_mono:
            return  # the horse still runs (or may yet resume its beats): its result may still come
        self.abandoned.pop(gone.job_id, None)

    def _interrupted(self, job: _Job, why: str) -> None:
        outcome = Outcome.KILLED if job.stop is not None else Outcome.INTERRUPTED
        self._end(job, self._result(job, outcome, f"{outcome.value}: {why}"))

    def _result(self, job: _Job, outcome: Outcome, message: str) -> RunResult:
        return RunResult(
            run_id=job.request.run_id,
            task=job.request.task,
            mode=job.request.mode,
            env_key=None,
            outcome=outcome,
            summary=message,
            finished=self.clock.now(),
            duration_s=round(self.clock.monotonic() - job.started_mono, 3),
            message=message,
        )

    def _end(self, job: _Job, result: RunResult) -> None:
        self.jobs.pop(job.request.run_id, None)
        # The loop's env bookkeeping is about this machine's envs: a worker's env is none of its business.
        local = dataclasses.replace(result, env_key=job.request.env_key)
        self.post(RunReported(lambda: local))

    # ------------------------------------------------------------------ stops and the end
    def stop(self, run_id: str, stop: StopRequest, *, kill_now: bool = False) -> None:
        job = self.jobs.get(run_id)
        if job is None:
            self.local.stop(run_id, stop, kill_now=kill_now)
            return
        self._stop(job, stop)

    def stop_all(self, stop: StopRequest) -> None:
        self.local.stop_all(stop)
        for job in list(self.jobs.values()):
            self._stop(job, stop)

    def _stop(self, job: _Job, stop: StopRequest) -> None:
        from redis.exceptions import RedisError
        from rq.job import Job

        job.stop = job.stop or stop
        try:
            rq_job = Job.fetch(job.job_id, connection=self.redis, serializer=self.serializer)
            if str(getattr(rq_job.get_status(), "value", "")) in ("queued", "deferred", "scheduled"):
                rq_job.cancel()
                self._end(job, self._result(job, Outcome.KILLED, f"killed: {stop.detail} (still queued)"))
                return
            self.redis.set(stop_key(job.job_id), "1", ex=3600)
        except Exception as exc:  # noqa: BLE001 - NoSuchJobError, RedisError: the poll settles the run
            if not isinstance(exc, RedisError):
                self.log.debug("stop of job %s: %s", job.job_id, exc)

    def recover(self) -> list[int]:
        return self.local.recover()

    def close(self) -> None:
        self.local.close()
        try:
            self.redis.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


def _decoded(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def home_id_for(home: Path) -> str:
    return hashlib.sha256(str(home).encode()).hexdigest()[:10]
