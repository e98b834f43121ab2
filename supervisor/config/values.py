"""Validators of single config values: each takes the raw text of one value and returns the parsed value, or
raises InvalidValue whose message is the reason shown after the value (inifile.lookup puts the task, file,
section, key and value in front of it).

Generic ones (numbers, whole numbers, booleans, times of day) and those of the [Frequency], [Global],
[Limits], [Supervisor] and [Web] keys; the scheduling and [Retry] keys are in schedule_keys.py.
"""

from __future__ import annotations

import math
import re
from datetime import time, timedelta
from typing import Callable

from ..model import CatchUp

# Longest accepted interval. Far beyond any real schedule (a huge interval is a known trick for "only on
# startup"), but small enough that "now + every" can never overflow datetime's year 9999.
_MAX_EVERY = timedelta(days=366 * 1000)

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_MAX_PROCESSES = 4194304  # PID_MAX_LIMIT on 64-bit Linux: no cap can be larger
_INSTALLERS = ("uv", "pip")
_EXECUTORS = ("local", "rq")
_LAUNCHERS = ("spawn", "fork")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_MIN_METRICS_TOKEN = 16
# Below this the debounce stops coalescing an editor's save (swap file, probe, backup, write) into one reload.
_MIN_WATCH_DEBOUNCE_S = 0.05


class InvalidValue(ValueError):
    """A value failed validation; the message is the reason shown after the value."""


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidValue("not a number") from None
    if not math.isfinite(value):
        raise InvalidValue("not a finite number")
    return value


def positive_number(text: str) -> float:
    try:
        value = number(text)
    except InvalidValue:
        raise InvalidValue("not a positive number") from None
    if value <= 0:
        raise InvalidValue("not a positive number")
    return value


def non_negative_number(text: str) -> float:
    value = number(text)
    if value < 0:
        raise InvalidValue("must be 0 or more")
    return value


def optional_limit(text: str) -> float | None:
    """A limit where 0 means "no limit"."""
    value = non_negative_number(text)
    return None if value == 0 else value


def max_processes(text: str) -> int | None:
    """MaxProcesses: processes + threads of one run, a whole number; 0 means no cap (like the other limits).

    1 is allowed: the task process alone, which then cannot start a thread or a subprocess."""
    try:
        value = int(text, 10)
    except ValueError:
        raise InvalidValue("not a whole number (processes and threads of one run; 0 = no cap)") from None
    if value < 0:
        raise InvalidValue("must be 0 (no cap) or more")
    if value > _MAX_PROCESSES:
        raise InvalidValue(f"too large (at most {_MAX_PROCESSES}, the kernel's pid limit)")
    return None if value == 0 else value


def keep_files(text: str) -> int | None:
    """[Output] KeepFiles: how many of the newest files Output/ keeps, a whole number; 0 means no such limit."""
    try:
        value = int(text, 10)
    except ValueError:
        raise InvalidValue("not a whole number (files kept in Output/; 0 = no limit)") from None
    if value < 0:
        raise InvalidValue("must be 0 or more (files kept in Output/; 0 = no limit)")
    return value or None


def every(text: str) -> timedelta:
    minutes = positive_number(text)
    if minutes > _MAX_EVERY / timedelta(minutes=1):
        raise InvalidValue(f"too large (at most {_MAX_EVERY / timedelta(minutes=1):.0f} minutes)")
    every = timedelta(minutes=minutes)
    if every <= timedelta(0):  # below timedelta's microsecond resolution
        raise InvalidValue("too small (the interval rounds to zero)")
    return every


def duration(text: str) -> timedelta:
    """A span with units: ``26h``, ``90m``, ``45s``, ``2d``, ``1w``, or parts together (``1h30m``).

    A bare number is refused rather than guessed: minutes elsewhere in the config (EveryXMinutes), seconds
    in others, and a wrong guess would be off by a factor of 60."""
    words = text.strip().replace(" ", "")
    if not words:
        raise InvalidValue("empty (expected a duration such as 26h, 90m, 45s or 2d)")
    if _DURATION_PART.sub("", words):
        hint = " (add a unit: s, m, h, d or w)" if re.fullmatch(r"\d+(\.\d+)?", words) else ""
        raise InvalidValue(f"not a duration{hint}; expected e.g. 26h, 90m, 45s, 2d or 1h30m")
    seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _DURATION_PART.findall(words))
    if seconds <= 0:
        raise InvalidValue("must be more than zero")
    if seconds > _MAX_EVERY.total_seconds():
        raise InvalidValue(f"too large (at most {_MAX_EVERY.days} days)")
    return timedelta(seconds=seconds)


def clock(text: str) -> time:
    match = _HHMM.fullmatch(text)
    if match is None:
        raise InvalidValue("not a time of day (expected HH:MM, e.g. 08:30)")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise InvalidValue("not a time of day (hours 00-23, minutes 00-59)")
    return time(hour, minute)


def boolean(text: str) -> bool:
    folded = text.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise InvalidValue("not a boolean (use true/false, yes/no, on/off or 1/0)")


def catch_up(text: str) -> CatchUp:
    try:
        return CatchUp(text.lower())
    except ValueError:
        raise InvalidValue("not a catch-up policy (use once or skip)") from None


def integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise InvalidValue("not a whole number") from None
        if value < minimum:
            raise InvalidValue(f"must be at least {minimum}")
        return value

    return parse


def watch_debounce(text: str) -> float:
    value = number(text)
    if value < _MIN_WATCH_DEBOUNCE_S:
        raise InvalidValue(f"must be at least {_MIN_WATCH_DEBOUNCE_S:g} (seconds)")
    return value


def listen(text: str) -> str:
    from .listen import ListenError, parse_listen  # pure module: no web dependency needed

    try:
        listen = parse_listen(text)
    except ListenError as exc:
        raise InvalidValue(str(exc)) from None
    return f"[{listen.host}]:{listen.port}" if ":" in listen.host else f"{listen.host}:{listen.port}"


def host_list(text: str) -> tuple[str, ...]:
    hosts = tuple(h for h in text.replace(",", " ").split() if h)
    for host in hosts:
        if "/" in host or "@" in host:
            raise InvalidValue(f"{host!r} is not a host name (no scheme or path: just example.org)")
    return hosts


def metrics_token(text: str) -> str:
    """[Web] MetricsToken: a bearer token as RFC 6750 spells one, long enough not to be guessed."""
    token = text.strip()
    if not _BEARER_TOKEN.fullmatch(token):
        raise InvalidValue("not a bearer token (letters, digits and - . _ ~ + / = only, no spaces)")
    if len(token) < _MIN_METRICS_TOKEN:
        raise InvalidValue(
            f"too short ({len(token)} characters; at least {_MIN_METRICS_TOKEN}, e.g. from `openssl rand -hex 32`)"
        )
    return token


def secret_shown(text: str) -> str:
    """How an error shows a secret's value: its length only."""
    return f"<secret, {len(text.strip())} characters>"


def installer(text: str) -> str:
    folded = text.lower()
    if folded not in _INSTALLERS:
        raise InvalidValue(f"not an installer (use {' or '.join(_INSTALLERS)})")
    return folded


def executor(text: str) -> str:
    value = text.strip().lower()
    if value not in _EXECUTORS:
        raise InvalidValue(f"must be one of {', '.join(_EXECUTORS)}")
    return value


def launcher(text: str) -> str:
    """[Supervisor] Launcher: how a run's process is started (execution/forkserver.py)."""
    value = text.strip().lower()
    if value not in _LAUNCHERS:
        raise InvalidValue(f"must be one of {', '.join(_LAUNCHERS)}")
    return value


def redis_url(text: str) -> str:
    value = text.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidValue("must be a redis://, rediss:// or unix:// URL")
    return value


def queue_name(text: str) -> str:
    value = text.strip()
    if not _QUEUE_NAME.fullmatch(value):
        raise InvalidValue("must be 1-100 letters, digits and _ . : - (starting with a letter or digit)")
    return value
