"""The supervisor's own dead-man's switch: ``[Supervisor] HeartbeatUrl`` pinged every ``HeartbeatSeconds``.

Policy:

- The first ping goes out at start, then one per period on a fixed grid (a slow ping does not shift the
  grid; beats missed while a ping hung are skipped, not sent in a burst).
- Its own thread, not the notification queue: a queue full of notices for a dead receiver must not silence
  the heartbeat, and a hanging heartbeat receiver must not hold notices.
- ``healthy`` lets the supervisor withhold beats while it is alive but stuck (its loop not turning): the
  point of a heartbeat is that the external monitor notices a hung supervisor too.
- Failures are logged on change only: one WARNING when beats start failing, one INFO when they get through
  again; a monitor that is down for a day must not write 1440 lines.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..config.notify_keys import mask_url
from ..model import HeartbeatSettings
from .model import DeliveryResult
from .senders import ping


class Heartbeat:
    def __init__(
        self,
        settings: HeartbeatSettings,
        *,
        logger: logging.Logger,
        send: Callable[[str], DeliveryResult] = ping,
        healthy: Callable[[], str | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.url is None:
            raise ValueError("a heartbeat needs a URL")
        self._url = settings.url
        self._period = settings.seconds
        self._log = logger
        self._send = send
        self._healthy = healthy
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._log.info("heartbeat: pinging %s every %g s", mask_url(self._url), self._period)
        self._thread.start()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Stop beating; a ping in flight is abandoned after ``timeout`` (the thread is a daemon)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        failing = 0
        withheld = False
        due = self._monotonic()
        while True:
            wait = due - self._monotonic()
            if self._stop.wait(max(0.0, wait)):
                return
            problem = self._healthy()
            if problem is not None:
                if not withheld:
                    self._log.warning("heartbeat: withheld while the supervisor is unhealthy: %s", problem)
                withheld = True
            else:
                if withheld:
                    self._log.info("heartbeat: resumed")
                withheld = False
                result = self._send(self._url)
                if result.ok:
                    if failing:
                        self._log.info(
                            "heartbeat: %s answers again after %d failed ping(s)", mask_url(self._url), failing
                        )
                    failing = 0
                else:
                    if not failing:
                        self._log.warning(
                            "heartbeat: ping to %s failed: %s (logged again when it recovers)",
                            mask_url(self._url),
                            result.detail,
                        )
                    failing += 1
            due += self._period
            now = self._monotonic()
            if due <= now:  # a ping took longer than a period: skip the missed beats, keep the grid
                due += self._period * ((now - due) // self._period + 1)
