"""Riding out a Redis outage on a worker: capped exponential backoff, one line when Redis goes, one when it is back.

Policy:
* Only a lost connection is an outage: redis-py's ``ConnectionError`` (refused, reset, a restarting server still
  loading its data, a changed password) and ``TimeoutError`` (a silent network). Any other Redis error is a
  bug or a misconfiguration and is raised as before.
* The waits between tries double from ``Backoff.first_s`` up to ``Backoff.max_s`` (``worker --max-backoff``,
  default 30 s): a restart of a few seconds is noticed within a second or two, a long outage costs one try per
  ``max_s``. Nothing gives up: a worker has nothing better to do than wait for its Redis.
* One ``Outage`` per worker: the first failed call logs a warning, the tries that follow are silent, the first
  call that succeeds again logs how long Redis was away. A failure within ``SETTLE_S`` of that is taken as
  the same outage's tail (a connection of before it, failing once more) and logged only if it lasts longer
  than ``SETTLE_S``. The worker's main thread and RQ's pubsub thread share one, hence the lock; a work horse
  starts with a fresh, quiet one of its own (its worker, which watches Redis too, says it once).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
SETTLE_S = 5.0  # a failure this soon after Redis came back belongs to the outage already logged


def outage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis cannot be reached right now" (imported late: redis is an extra)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError)


@dataclass(frozen=True)
class Backoff:
    """Waits between two tries: ``first_s``, doubling, never more than ``max_s``."""

    first_s: float = BACKOFF_FIRST_S
    max_s: float = BACKOFF_MAX_S

    def delays(self) -> Iterator[float]:
        delay = min(self.first_s, self.max_s)
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


class Outage:
    """Tracks whether Redis is reachable for one process and logs each change once (see the module policy)."""

    def __init__(
        self,
        where: str,
        *,
        log: logging.Logger,
        backoff: Backoff = Backoff(),
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where  # the Redis URL without its password
        self.log = log
        self.backoff = backoff
        self.quiet = quiet  # a work horse: its worker logs the outage, once
        self.clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._back_at = -SETTLE_S  # when the last outage was logged as over
        self._echo = False  # the failure being tracked is an echo of the outage already logged

    def fresh(self, *, quiet: bool) -> Outage:
        """The same settings with no outage noted, for a forked child (a lock is never shared across fork)."""
        return Outage(self.where, log=self.log, backoff=self.backoff, quiet=quiet, clock=self.clock)

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def down(self, exc: BaseException, *, doing: str) -> None:
        """A call failed for lack of Redis; logs only the first failure of an outage."""
        with self._lock:
            now = self.clock()
            if self._down_since is not None:
                if not (self._echo and now - self._down_since > SETTLE_S):
                    return
                self._echo = False  # not an echo after all: Redis went away again, say so now
            else:
                self._down_since = now
                # A connection opened before Redis went away may fail once more just after it is back: the same
                # outage, not a new one to log.
                self._echo = now - self._back_at < SETTLE_S
        if self.quiet or self._echo:
            return
        self.log.warning(
            "Redis at %s unreachable (%s) while %s: retrying every %g s at most; runs in flight go on",
            self.where,
            exc,
            doing,
            self.backoff.max_s,
        )

    def up(self) -> None:
        """A call succeeded; logs once when this ends an outage."""
        with self._lock:
            since, self._down_since = self._down_since, None
            if since is None or self._echo:
                self._echo = False
                return
            self._back_at = self.clock()
        if not self.quiet:
            self.log.warning("Redis at %s reachable again after %.1f s", self.where, self._back_at - since)

    def tolerate(self, call: Callable[[], T], *, doing: str) -> T | None:
        """``call()``, or None when Redis is away (noted, not raised): for bookkeeping that can be skipped."""
        try:
            result = call()
        except outage_errors() as exc:
            self.down(exc, doing=doing)
            return None
        self.up()
        return result

    def retry(self, call: Callable[[], T], *, doing: str, keep_going: Callable[[], bool] = lambda: True) -> T | None:
        """``call()``, retried with backoff until Redis answers; None only when ``keep_going()`` turns false."""
        delays = self.backoff.delays()
        while True:
            try:
                result = call()
            except outage_errors() as exc:
                self.down(exc, doing=doing)
                if not keep_going():
                    return None
                time.sleep(next(delays))  # the backoff between two tries of an unreachable server
                continue
            self.up()
            return result
