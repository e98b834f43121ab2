"""The ``[Notify]`` keys (task config.ini, home-wide defaults in taskautomation.ini) and the heartbeat keys of
``[Supervisor]``, validated one by one.

Policy:

- A key present in the task's file wins over the home's value for that key; an empty value is a deliberate
  "none" (``Urls =`` in a task silences the home's channels for it).
- Every URL in ``Urls`` must be one Apprise accepts; ``PingUrl`` and ``HeartbeatUrl`` must be http(s) URLs with a
  host. ``Command`` is split like a shell would split it (shlex) but is never run by a shell.
- ``ExpectOkWithin`` and ``RepeatEvery`` are durations with a unit (``26h``, ``90m``); ``SlowAfterSeconds`` a
  number of seconds, ``SlowFactor`` a factor above 1. Each takes ``off`` (or empty, or 0) for "none", so a task
  can turn off a home-wide default.
- A bad value raises through the caller's ``error`` factory, so the message names task, file, section, key
  and value like every other config error. A password in a URL is shown as ``***`` even there.
"""

from __future__ import annotations

import math
import re
import shlex
import urllib.parse
from datetime import timedelta
from typing import Callable, Mapping, TypeVar

from ..model import HeartbeatSettings, NotifyEvent, NotifySettings
from .values import InvalidValue, duration

NOTIFY_KEYS = (
    "Urls",
    "On",
    "AfterFailures",
    "PingUrl",
    "Command",
    "ExpectOkWithin",
    "SlowAfterSeconds",
    "SlowFactor",
    "RepeatEvery",
)
_OFF = frozenset({"", "off", "never", "none", "0"})
HEARTBEAT_KEYS = ("HeartbeatUrl", "HeartbeatSeconds")
MIN_HEARTBEAT_S = 1.0

# Builds the error to raise for ``key = value``: the caller knows the file, the section and the task.
ErrorFactory = Callable[[str, str, str], Exception]

T = TypeVar("T")
_SEPARATORS = re.compile(r"[\s,]+")
_URL_START = re.compile(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_CONFIGURABLE_EVENTS = tuple(e for e in NotifyEvent if e is not NotifyEvent.TEST)


class _Invalid(ValueError):
    """The reason a value is refused."""


def split_urls(text: str) -> list[str]:
    """URLs separated by commas or whitespace. A comma inside one URL's query (``mailto://...?to=a@x.org,b@y.org``)
    stays with it: a new URL starts only where ``scheme://`` follows a separator. A stray word stays attached
    to the URL before it, so validation refuses it instead of silently dropping it."""
    return [p.strip(" ,\t\r\n") for p in _URL_START.split(text.strip()) if p.strip(" ,\t\r\n")]


def apprise_url_problem(url: str) -> str | None:
    """None when Apprise accepts ``url``; otherwise the reason, for a message."""
    import apprise

    if "://" not in url:
        return "not a URL (expected scheme://..., e.g. mailto://user:pass@example.org)"
    stray = next((word for word in url.split()[1:]), None)
    if stray is not None:
        return f"{stray!r} is not a URL (expected scheme://...)"
    if apprise.Apprise.instantiate(url) is None:
        scheme = url.split("://", 1)[0]
        return (
            f"Apprise does not accept this URL (unknown scheme {scheme!r} or a missing or invalid part; "
            "see the Apprise wiki for its form)"
        )
    return None


def _urls(text: str) -> tuple[str, ...]:
    urls = split_urls(text)
    for url in urls:
        problem = apprise_url_problem(url)
        if problem is not None:
            raise _Invalid(f"{mask_url(url)}: {problem}")
    return tuple(urls)


def _events(text: str) -> frozenset[NotifyEvent]:
    events = set()
    for word in _SEPARATORS.split(text.strip()):
        if not word:
            continue
        try:
            event = NotifyEvent(word.lower())
        except ValueError:
            event = None
        if event is None or event is NotifyEvent.TEST:
            choices = ", ".join(e.value for e in _CONFIGURABLE_EVENTS)
            raise _Invalid(f"{word!r} is not an event (use any of {choices}, or leave empty for none)")
        events.add(event)
    return frozenset(events)


def _after_failures(text: str) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise _Invalid("not a whole number") from None
    if value < 1:
        raise _Invalid("must be at least 1")
    return value


def http_url_problem(url: str) -> str | None:
    """None for an http(s) URL with a host; otherwise the reason."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "not an http:// or https:// URL with a host (e.g. https://hc-ping.com/UUID)"
    if any(c.isspace() for c in url):
        return "a URL cannot contain spaces"
    return None


def _ping_url(text: str) -> str | None:
    url = text.strip()
    if not url:
        return None
    problem = http_url_problem(url)
    if problem is not None:
        raise _Invalid(problem)
    return url.rstrip("/")


def _command(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # unbalanced quotes
        raise _Invalid(f"cannot be split into arguments ({exc})") from None


def _optional_duration(text: str) -> timedelta | None:
    if text.strip().lower() in _OFF:
        return None
    try:
        return duration(text)
    except InvalidValue as exc:
        raise _Invalid(f"{exc} (or off for none)") from None


def _slow_after(text: str) -> float | None:
    if text.strip().lower() in _OFF:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _Invalid("not a number of seconds (or off for none)") from None
    if not math.isfinite(value) or value <= 0:
        raise _Invalid("must be a number of seconds above 0 (or off for none)")
    return value


def _slow_factor(text: str) -> float | None:
    if text.strip().lower() in _OFF:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _Invalid("not a number (a factor such as 3, or off for none)") from None
    if not math.isfinite(value) or value <= 1:
        raise _Invalid("must be more than 1 (slow = still running after this many times the usual duration)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Invalid("not a number") from None
    if not math.isfinite(value) or value < MIN_HEARTBEAT_S:
        raise _Invalid(f"must be at least {MIN_HEARTBEAT_S:g} (seconds)")
    return value


def _shown(key: str, value: str) -> str:
    """The value as an error message may show it: URLs with their password masked."""
    if key.lower() in ("urls", "pingurl", "heartbeaturl"):
        return " ".join(mask_url(u) for u in value.split())
    return value


def _get(values: Mapping[str, str], key: str, parse: Callable[[str], T], default: T, error: ErrorFactory) -> T:
    """``key`` parsed when present, else ``default``; a refused value raises ``error(key, shown, reason)``."""
    if key not in values:
        return default
    try:
        return parse(values[key])
    except _Invalid as exc:
        raise error(key, _shown(key, values[key]), str(exc)) from None


def parse_notify(values: Mapping[str, str], *, defaults: NotifySettings, error: ErrorFactory) -> NotifySettings:
    """``values`` maps the canonical key names of ``NOTIFY_KEYS`` present in the file to their raw text."""
    return NotifySettings(
        urls=_get(values, "Urls", _urls, defaults.urls, error),
        on=_get(values, "On", _events, defaults.on, error),
        after_failures=_get(values, "AfterFailures", _after_failures, defaults.after_failures, error),
        ping_url=_get(values, "PingUrl", _ping_url, defaults.ping_url, error),
        command=_get(values, "Command", _command, defaults.command, error),
        expect_ok_within=_get(values, "ExpectOkWithin", _optional_duration, defaults.expect_ok_within, error),
        slow_after_s=_get(values, "SlowAfterSeconds", _slow_after, defaults.slow_after_s, error),
        slow_factor=_get(values, "SlowFactor", _slow_factor, defaults.slow_factor, error),
        repeat_every=_get(values, "RepeatEvery", _optional_duration, defaults.repeat_every, error),
    )


def parse_heartbeat(values: Mapping[str, str], *, error: ErrorFactory) -> HeartbeatSettings:
    """``values`` maps the canonical names of ``HEARTBEAT_KEYS`` present in ``[Supervisor]`` to raw text."""
    base = HeartbeatSettings()
    return HeartbeatSettings(
        url=_get(values, "HeartbeatUrl", _ping_url, base.url, error),
        seconds=_get(values, "HeartbeatSeconds", _seconds, base.seconds, error),
    )


def mask_url(url: str) -> str:
    """``url`` safe for a log line: no password, no token.

    Apprise knows which parts of each of its URLs are secret (a Telegram bot token sits where a host would
    be), so its privacy form is used for the URLs it accepts, without the query. Anything else (http pings,
    a URL Apprise refuses) keeps only scheme, user, host and port: the path of a ping URL *is* its secret.
    """
    if "://" not in url:
        return url  # not a URL at all: nothing in it has the shape of a credential
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin is not None:
            return plugin.url(privacy=True).split("?", 1)[0]
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return f"{scheme}://***"
    user = f"{parts.username}:***@" if parts.password is not None else (f"{parts.username}@" if parts.username else "")
    if ":" in host:
        host = f"[{host}]"
    path = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{user}{host}{port}{path}"
