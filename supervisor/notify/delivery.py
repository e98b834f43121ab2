"""The delivery worker: one thread, a bounded queue, a few tries per job. Posting never blocks.

Policy (README, "Being told": delivery never hurts scheduling):

- ``post`` appends to an in-memory queue under a lock and returns: the loop thread never waits for a
  receiver. The queue holds at most ``capacity`` jobs; when it is full the *oldest* job is dropped (a fresh
  notice is worth more than a stale one), with one WARNING per overflow episode (until the queue drains).
- One worker thread sends the jobs in order. A job gets ``tries`` tries with growing pauses between them;
  every try is bounded by the sender's own timeout. A job that fails every try costs one WARNING (its
  description and reason are already masked).
- ``close`` stops taking jobs, gives the worker ``drain_s`` to send what is queued (one try each, no pauses),
  then returns. A receiver still hanging then cannot hold the supervisor's exit: the thread is a daemon.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Sequence

from .model import DeliveryResult, Job

DEFAULT_CAPACITY = 200
DEFAULT_TRIES = 3
DEFAULT_PAUSES_S = (2.0, 8.0)  # before the 2nd and 3rd try


class Delivery:
    """Sends jobs off the caller's thread; ``send`` does one try, ``describe`` names a job for the log."""

    def __init__(
        self,
        send: Callable[[Job], DeliveryResult],
        *,
        describe: Callable[[Job], str],
        logger: logging.Logger,
        capacity: int = DEFAULT_CAPACITY,
        tries: int = DEFAULT_TRIES,
        pauses_s: Sequence[float] = DEFAULT_PAUSES_S,
        name: str = "notify-delivery",
    ) -> None:
        if capacity < 1 or tries < 1:
            raise ValueError("capacity and tries must be at least 1")
        self._send = send
        self._describe = describe
        self._log = logger
        self._capacity = capacity
        self._tries = tries
        self._pauses = tuple(pauses_s)
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._overflowing = False
        self._busy = False
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def post(self, job: Job) -> None:
        """Queue ``job``; never blocks, never raises."""
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._capacity:
                dropped = self._queue.popleft()
                self.dropped += 1
                if not self._overflowing:
                    self._overflowing = True
                    self._log.warning(
                        "notifications: the delivery queue is full (%d waiting; a receiver is slow "
                        "or down): dropping the oldest, starting with %s",
                        self._capacity,
                        self._describe(dropped),
                    )
            self._queue.append(job)
            self._cond.notify()

    def pending(self) -> int:
        """Jobs queued or being sent."""
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def close(self, *, drain_s: float = 5.0) -> bool:
        """Stop taking jobs; wait up to ``drain_s`` for the queue to be sent. True when everything was sent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not self._started:
            return not self._queue
        self._thread.join(drain_s)
        with self._cond:
            if self._thread.is_alive() and self._queue:
                self._log.warning(
                    "notifications: %d not sent at shutdown (a receiver did not answer in time)", len(self._queue)
                )
                self._queue.clear()
            return not self._thread.is_alive()

    def _next(self) -> Job | None:
        with self._cond:
            while not self._queue:
                self._busy = False
                self._overflowing = False
                if self._closing:
                    return None
                self._cond.wait()
            self._busy = True
            return self._queue.popleft()

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                self._deliver(job)
            except Exception:  # noqa: BLE001 - a bug in a sender must not end notifications for the supervisor's life
                self._log.exception("notifications: unexpected error delivering %s", self._describe(job))

    def _deliver(self, job: Job) -> None:
        result = DeliveryResult(False, "not tried")
        tried = 0
        for attempt in range(self._tries):
            if attempt:
                with self._cond:
                    if self._closing:
                        break  # shutting down: one try per job, no pauses
                    pause = self._pauses[min(attempt - 1, len(self._pauses) - 1)] if self._pauses else 0.0
                    self._cond.wait_for(lambda: self._closing, timeout=pause)
            result = self._send(job)
            tried += 1
            if result.ok:
                self.delivered += 1
                return
        self.failed += 1
        self._log.warning(
            "notifications: %s failed after %d %s: %s",
            self._describe(job),
            tried,
            "try" if tried == 1 else "tries",
            result.detail,
        )
