"""``taskautomation worker``: an RQ worker that runs task processes for a supervisor on another machine.

The worker's home holds its own copies of task folders (unpacked from bundles), envs and task logs; it never
schedules anything. Stopping it with SIGTERM lets the run in flight finish (RQ's warm shutdown); a second
SIGTERM or SIGKILL ends the work horse, whose monitor then kills the task's processes.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from ..errors import TaskAutomationError
from ..execution.cgroups import Containment
from ..paths import Paths
from .job import WORKER_HOME_VAR


def serve_worker(
    paths: Paths, *, redis_url: str, queues: Sequence[str], burst: bool = False, name: str | None = None
) -> int:
    """Run an RQ worker on ``queues`` until stopped (or, with ``burst``, until the queues are empty)."""
    try:
        from redis import Redis
        from redis.exceptions import RedisError
        from rq import Queue, Worker
        from rq.serializers import JSONSerializer
    except ImportError as exc:
        raise TaskAutomationError(
            f"the worker needs the optional extra: pip install 'taskautomation[rq]' ({exc})"
        ) from None
    # Imported here, before RQ forks a work horse per job, so every horse inherits the job's modules instead
    # of importing them again (tens of ms per run).
    from . import job

    paths.ensure()
    os.environ[WORKER_HOME_VAR] = str(paths.home)  # read by the job in each work horse
    # Our own lines at INFO; libraries (virtualenv's chatter, RQ's per-job lines) only when they warn.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s worker: %(message)s"
    )
    logging.getLogger("taskautomation").setLevel(logging.INFO)
    connection = Redis.from_url(redis_url)
    try:
        connection.ping()
    except RedisError as exc:
        raise TaskAutomationError(f"cannot reach Redis at {redis_url.rpartition('@')[2]}: {exc}") from None
    log = logging.getLogger("taskautomation.worker")
    containment = Containment(paths.home)
    for line in containment.start():  # the home's parent groups; stale run groups of this home are removed
        log.info("containment: %s", line)
    job.configure_worker(containment=containment)
    worker = Worker(
        [Queue(q, connection=connection, serializer=JSONSerializer) for q in queues],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
    )
    log.info("worker %s: home %s, queues %s", worker.name, paths.home, ", ".join(queues))
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        containment.close()
    return 0
