"""The systemd notification protocol (``sd_notify``) over a stdlib ``AF_UNIX`` datagram socket.

Policy:

- Active only when ``NOTIFY_SOCKET`` is set (systemd sets it for ``Type=notify`` units); otherwise every call
  is a no-op, so the supervisor runs the same in a terminal or tmux.
- The variables are taken out of the environment when read: tasks inherit the supervisor's environment and
  must not talk to systemd in its name (the unit also says ``NotifyAccess=main``).
- ``WATCHDOG=1`` is sent by the loop thread itself through ``maybe_ping``, at half of ``WATCHDOG_USEC``; the
  loop bounds its sleep by ``wake_interval()`` (a quarter of it), so a healthy loop pings at least every
  three quarters of the watchdog period and a hung loop stops pinging and gets restarted.
- A failed send is logged once and never raised: losing a notification must not stop the supervisor.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import MutableMapping

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str | bytes:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value: ``@name`` is an abstract socket (leading NUL)."""
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    return value


def watchdog_period_s(environ: MutableMapping[str, str], *, pid: int) -> float | None:
    """The watchdog period in seconds when it applies to process ``pid``; None when off or not for us."""
    raw = environ.get(ENV_WATCHDOG_USEC, "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get(ENV_WATCHDOG_PID)
    if owner:
        try:
            if int(owner) != pid:
                return None  # meant for another process (e.g. a wrapper that exec'd us under another pid)
        except ValueError:
            return None
    return usec / 1_000_000


class SdNotifier:
    """Sends state changes to the service manager; a no-op without ``NOTIFY_SOCKET``.

    Not thread-safe by design: only the loop thread uses it (the watchdog ping must prove that thread lives).
    """

    def __init__(
        self, address: str | None, *, watchdog_s: float | None = None, logger: logging.Logger | None = None
    ) -> None:
        self._address = socket_address(address) if address else None
        self._watchdog_s = watchdog_s if self._address is not None else None
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._sock: socket.socket | None = None
        self._next_ping: float | None = None  # monotonic time of the next WATCHDOG=1; None: ping at once
        self._warned = False

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str], *, pid: int, logger: logging.Logger | None = None
    ) -> SdNotifier:
        """Read (and remove) the notification variables from ``environ`` (``os.environ`` in the service)."""
        watchdog_s = watchdog_period_s(environ, pid=pid)
        address = environ.get(ENV_SOCKET) or None
        for name in (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
            environ.pop(name, None)
        return cls(address, watchdog_s=watchdog_s, logger=logger)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_s(self) -> float | None:
        """The watchdog period systemd enforces, or None when no watchdog is configured."""
        return self._watchdog_s

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False when disabled or the send failed."""
        if self._address is None:
            return False
        payload = "\n".join(fields).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._warned:  # once: the manager may be gone for good, do not flood the log
                self._warned = True
                self._log.warning("cannot notify the service manager at %s: %s", self._display(), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (after the first scan), with a status line."""
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=...``: what ``systemctl status`` shows."""
        return self.send(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` at the start of a clean shutdown."""
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def wake_interval(self) -> float | None:
        """The longest the loop may sleep so that pings stay on time; None when there is no watchdog."""
        return self._watchdog_s / 4 if self._watchdog_s is not None else None

    def maybe_ping(self, now_mono: float) -> bool:
        """Send ``WATCHDOG=1`` when half the watchdog period has passed since the last one; True if sent.

        Call it from the loop thread on every turn with ``time.monotonic()``.
        """
        if self._watchdog_s is None:
            return False
        if self._next_ping is not None and now_mono < self._next_ping:
            return False
        self._next_ping = now_mono + self._watchdog_s / 2
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _display(self) -> str:
        address = self._address
        if isinstance(address, bytes):
            return "@" + os.fsdecode(address[1:])
        return str(address)


def _one_line(text: str) -> str:
    # The protocol is newline-separated KEY=VALUE: a newline in a status would start a bogus field.
    return " ".join(text.split())


def status_line(*, tasks: int, running: int, broken: int) -> str:
    """What ``systemctl status`` shows for the supervisor."""
    line = f"{tasks} task(s), {running} running"
    return f"{line}, {broken} not loaded (see taskautomation status)" if broken else line


class LoopNotifier:
    """What the loop tells systemd and when: the loop calls ``turn`` once per wake, from its own thread.

    ``READY=1`` once, at the first turn after the first scan; ``STATUS=`` whenever the counts change;
    ``WATCHDOG=1`` through ``SdNotifier.maybe_ping``; ``STOPPING=1`` once when shutdown begins.
    """

    def __init__(self, notifier: SdNotifier) -> None:
        self.notifier = notifier
        self._ready = False
        self._stopping = False
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def max_sleep(self) -> float | None:
        """Bound for the loop's sleep (None: no watchdog, sleep as long as the schedule allows)."""
        return self.notifier.wake_interval()

    def turn(self, now_mono: float, *, scanned: bool, tasks: int, running: int, broken: int) -> None:
        if not self.notifier.enabled:
            return
        if not self._stopping:
            line = status_line(tasks=tasks, running=running, broken=broken)
            if scanned and not self._ready:
                self.notifier.ready(line)
                self._ready = True  # a lost READY is not re-sent: systemd's start timeout reports it
                self._last_status = line
            elif self._ready and line != self._last_status:
                self.notifier.status(line)
                self._last_status = line
        # The ping goes on during shutdown too: stopping runs with long graces must not look like a hang.
        self.notifier.maybe_ping(now_mono)

    def stopping(self, *, running: int) -> None:
        if self.notifier.enabled and not self._stopping:
            self._stopping = True
            self.notifier.stopping(f"stopping: waiting for {running} run(s) to end" if running else "stopping")

    def close(self) -> None:
        self.notifier.close()
