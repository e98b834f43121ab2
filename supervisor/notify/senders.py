"""One try of one delivery: an Apprise channel, an HTTP ping, or the Command hook.

Each returns a DeliveryResult and never raises: a receiver that refuses, hangs or is unreachable is a result
with a reason, bounded by a timeout. Reasons are masked by the caller's masker and URLs by ``mask_url``, so a
result can be logged and printed as it is. Retrying is the delivery worker's business, not this module's.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping, Sequence

from ..config.notify_keys import mask_url
from ..model import NotifyEvent
from .message import clip
from .model import DeliveryResult, Notice

CHANNEL_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
USER_AGENT = "taskautomation-supervisor"
Mask = Callable[[str], str]
Popen = Callable[..., "subprocess.Popen[bytes]"]


class _AppriseReasons(logging.Handler):
    """Keeps the last warning Apprise logged on this thread, so a failed send can say why in one line.

    Apprise reports failures through its logger rather than its return value. Attached once to the
    ``apprise`` logger, which then stops propagating: the supervisor reports each failed delivery itself, in
    one line with its URL masked, and Apprise's own lines (one per try, at debug level the body) stay out of
    every log. Per-thread, so two senders never read each other's reasons.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.local.last = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not break a send
            self.local.last = None

    def take(self) -> str | None:
        last: str | None = getattr(self.local, "last", None)
        self.local.last = None
        return last


def _reasons_handler() -> _AppriseReasons:
    logger = logging.getLogger("apprise")
    for handler in logger.handlers:
        if isinstance(handler, _AppriseReasons):
            return handler
    handler = _AppriseReasons()
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def send_apprise(url: str, notice: Notice, *, timeout_s: float = CHANNEL_TIMEOUT_S, mask: Mask = str) -> DeliveryResult:
    """Send ``notice`` to one Apprise URL; Apprise does the channel's protocol (never written by hand here)."""
    try:
        import apprise

        reasons = _reasons_handler()
        reasons.take()
        plugin: Any = apprise.Apprise.instantiate(url)
        if plugin is None:
            return DeliveryResult(False, "Apprise does not accept this URL")
        # Apprise's defaults are 4 s per socket operation (15 s for SMTP connects); one limit for all channels.
        plugin.socket_connect_timeout = timeout_s
        plugin.socket_read_timeout = timeout_s
        warning = apprise.NotifyType.WARNING
        kind = {
            NotifyEvent.FAILURE: apprise.NotifyType.FAILURE,
            NotifyEvent.TEST: apprise.NotifyType.INFO,
            NotifyEvent.MISSED: warning,
            NotifyEvent.SILENT: warning,
            NotifyEvent.SLOW: warning,
        }.get(notice.event, apprise.NotifyType.SUCCESS)
        if plugin.notify(body=notice.body, title=notice.title, notify_type=kind):
            return DeliveryResult(True, "delivered")
        return DeliveryResult(False, _safe(reasons.take() or "the channel refused the notice", url, mask))
    except Exception as exc:  # noqa: BLE001 - a plugin bug must cost one failed delivery, never the worker
        return DeliveryResult(False, _safe(f"{type(exc).__name__}: {exc}", url, mask))


def ping(url: str, body: bytes | None = None, *, timeout_s: float = CHANNEL_TIMEOUT_S) -> DeliveryResult:
    """GET ``url`` (POST when there is a body, as healthchecks.io expects for a log). 2xx is success."""
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET", headers={"User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(1024)
            return DeliveryResult(True, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return DeliveryResult(False, f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return DeliveryResult(False, f"no answer within {timeout_s:g} s")
        return DeliveryResult(False, _safe(str(getattr(reason, "strerror", None) or reason), url, str))
    except TimeoutError:
        return DeliveryResult(False, f"no answer within {timeout_s:g} s")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return DeliveryResult(False, _safe(f"{type(exc).__name__}: {exc}", url, str))


def hook_environment(base: Mapping[str, str], notice: Notice) -> dict[str, str]:
    """The Command hook's environment: the supervisor's plus the run's facts."""
    env = dict(base)
    env.update(
        TASK_NAME=notice.task,
        TASK_RUN_ID=notice.run_id,
        TASK_EVENT=notice.event.value,
        TASK_OUTCOME=notice.outcome,
        TASK_MESSAGE=notice.message,
    )
    return env


def run_command(
    argv: Sequence[str],
    notice: Notice,
    *,
    env: Mapping[str, str],
    timeout_s: float = COMMAND_TIMEOUT_S,
    popen: Popen = subprocess.Popen,
    mask: Mask = str,
) -> DeliveryResult:
    """Run the hook (argv, never a shell) with the notice on stdin; past ``timeout_s`` its whole process
    group is killed. Exit 0 is success."""
    stdin = f"{notice.title}\n\n{notice.body}\n".encode()
    try:
        proc = popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=hook_environment(env, notice),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return DeliveryResult(False, mask(f"cannot run {argv[0]!r}: {exc.strerror or exc}"))
    try:
        _, err = proc.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return DeliveryResult(False, f"killed after {timeout_s:g} s (the hook's limit)")
    except OSError:  # stdin closed early (a hook that ignores its input): wait for its verdict anyway
        try:
            err = b""
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return DeliveryResult(False, f"killed after {timeout_s:g} s (the hook's limit)")
    if proc.returncode == 0:
        return DeliveryResult(True, "exit 0")
    last = (err or b"").decode("utf-8", "replace").strip().splitlines()
    why = f": {clip(last[-1], 300)}" if last else ""
    if proc.returncode < 0:
        return DeliveryResult(False, mask(f"killed by {signal.Signals(-proc.returncode).name}{why}"))
    return DeliveryResult(False, mask(f"exit {proc.returncode}{why}"))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the hook and everything it started
    except ProcessLookupError:
        pass
    proc.wait()
    for stream in (proc.stdin, proc.stderr):
        if stream is not None:
            stream.close()


def _safe(reason: str, url: str, mask: Mask) -> str:
    """A reason fit for the log: secrets masked, the raw URL (which may hold a token) replaced."""
    text = mask(reason)
    if url and url in text:
        text = text.replace(url, mask_url(url))
    return clip(text, 500)
