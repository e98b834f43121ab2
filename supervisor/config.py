"""Parse a task's ``config.ini`` into a TaskSpec and the home's ``taskautomation.ini`` into a HomeConfig.

Policy (the config keys and rules of README.md and docs/architecture.md):

- A schedule is required: exactly one of ``[Frequency] EveryXMinutes``, ``Cron`` and ``RunAt`` (none or
  two is an error naming them). Every other key has a documented default.
- ``[Retry]`` keys missing from a task take the home's ``[Retry]`` defaults (taskautomation.ini), like
  ``[Limits]``; a task's own value wins.
- A *present* but invalid value is a ConfigError; nothing is silently coerced.
- A missing seed key or section (AllowedFrom, AllowedTo, Enabled, Testing, RunOnStartup) is a warning
  naming the key and the default used; missing extension keys (CatchUp, [Limits] ...) are silent, because
  seed-era configs never have them and warning about every one would bury the useful warnings.
- Unknown sections and keys are warnings (with a "did you mean" when the typo is obvious), never errors,
  so a config written for a newer version still loads.
- Sections and keys are case-insensitive; two spellings of the same section or key in one file are an
  error, because silently picking one of them would hide the user's mistake.
- Every message has one shape: ``task 'NAME': /abs/config.ini: [Section] Key = 'value': reason`` (the
  home config omits the ``task`` part).

Parsing (pure, from text) is separate from reading (bytes from disk, decoding), so tests need no files.
"""

from __future__ import annotations

import configparser
import difflib
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from . import safefile
from .errors import ConfigError
from .notify.model import HeartbeatSettings, NotifySettings
from .notify.settings import HEARTBEAT_KEYS, NOTIFY_KEYS, parse_heartbeat, parse_notify
from .safefile import UnsafeFileError
from .schedule_keys import (
    InvalidValue,
    backoff,
    cron_expression,
    cron_meets_window,
    jitter_seconds,
    retry_on,
    run_at_times,
    time_zone,
)
from .spec import CatchUp, ConfigResult, HomeConfig, Limits, RetryPolicy, TaskSpec, Window

T = TypeVar("T")

# Longest accepted interval. Far beyond any real schedule (a huge interval is a known trick for "only on
# startup"), but small enough that "now + every" can never overflow datetime's year 9999.
_MAX_EVERY = timedelta(days=366 * 1000)

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_MAX_PROCESSES = 4194304  # PID_MAX_LIMIT on 64-bit Linux: no cap can be larger
_SCHEDULE_KEYS = ("EveryXMinutes", "Cron", "RunAt")


# --- the schema: canonical spellings, used in every message ------------------------------------------

_TASK_SCHEMA: dict[str, tuple[str, ...]] = {
    "Frequency": ("EveryXMinutes", "Cron", "RunAt", "AllowedFrom", "AllowedTo", "CatchUp", "TimeZone",
                  "JitterSeconds"),
    "Global": ("Enabled", "Testing", "RunOnStartup", "Queue"),
    "Limits": ("TimeoutSeconds", "KillGraceSeconds", "MemoryMB", "CPUSeconds", "MaxProcesses"),
    "Notify": NOTIFY_KEYS,
    "Retry": ("Attempts", "DelaySeconds", "Backoff", "MaxDelaySeconds", "On"),
}
# Seed keys that warn when missing, with the default as the message shows it. EveryXMinutes is required.
_TASK_SEED_DEFAULTS: dict[str, dict[str, str]] = {
    "Frequency": {"AllowedFrom": "00:00", "AllowedTo": "23:59"},
    "Global": {"Enabled": "True", "Testing": "False", "RunOnStartup": "False"},
}
_HOME_SCHEMA: dict[str, tuple[str, ...]] = {
    "Supervisor": ("Installer", "KeepRuns", "LogMaxBytes", "LogBackups", "OutputCapBytes",
                   "WatchDebounceSeconds", "MaxConcurrentRuns", "Executor", "RedisUrl", *HEARTBEAT_KEYS),
    "Limits": _TASK_SCHEMA["Limits"],
    "Notify": NOTIFY_KEYS,
    "Retry": _TASK_SCHEMA["Retry"],
    "Web": ("Listen", "AllowedHosts"),
}
_INSTALLERS = ("uv", "pip")
_EXECUTORS = ("local", "rq")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
# Below this the debounce stops coalescing an editor's save (swap file, probe, backup, write) into one reload.
_MIN_WATCH_DEBOUNCE_S = 0.05


# --- the parsed file: case-insensitive view with the user's spelling kept for messages ----------------

@dataclass(frozen=True)
class _Entry:
    key: str  # as the user spelled it
    value: str


@dataclass(frozen=True)
class _Section:
    name: str  # as the user spelled it
    entries: Mapping[str, _Entry]  # lower-cased key -> entry, in file order


@dataclass(frozen=True)
class _Context:
    """Where a message comes from: the prefix every error and warning starts with."""

    path: Path
    task: str | None

    @property
    def prefix(self) -> str:
        file = os.path.abspath(self.path)
        return f"task '{self.task}': {file}" if self.task is not None else file

    def error(self, section: str, key: str, value: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.prefix}: [{section}] {key} = {value!r}: {reason}")

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"{self.prefix}: {what}")

    def warning(self, what: str) -> str:
        return f"{self.prefix}: {what}"


def _parse_sections(text: str, ctx: _Context) -> dict[str, _Section]:
    """Split ``text`` into case-insensitive sections; configparser syntax errors become ConfigError."""
    parser = configparser.ConfigParser(
        interpolation=None,  # a '%' in a value (a URL, a format string) must not break parsing
        inline_comment_prefixes=(";", "#"),  # only after whitespace: 'a#b' stays a value
        strict=True,  # exact duplicates are reported with their line number
        empty_lines_in_values=False,
        # [DEFAULT] would silently leak its keys into every section; make it an ordinary (unknown) one.
        default_section="\0no default section",
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep spelling; we fold case ourselves
    try:
        parser.read_string(text, source=os.fspath(ctx.path))
    except configparser.DuplicateSectionError as exc:
        raise ctx.fail(f"line {exc.lineno}: section [{exc.section}] appears twice") from None
    except configparser.DuplicateOptionError as exc:
        raise ctx.fail(f"line {exc.lineno}: [{exc.section}] {exc.option} appears twice") from None
    except configparser.MissingSectionHeaderError as exc:
        raise ctx.fail(f"line {exc.lineno}: {exc.line.strip()!r} comes before any [section] header") from None
    except configparser.ParsingError as exc:
        errors = list(getattr(exc, "errors", ()))
        if errors:
            lineno = errors[0][0]
            lines = text.split("\n")  # configparser counts lines the same way (StringIO)
            # configparser stores repr(line) with its newline; show the line as the user wrote it.
            shown = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else str(errors[0][1])
            more = f" (and {len(errors) - 1} more bad lines)" if len(errors) > 1 else ""
            raise ctx.fail(f"line {lineno}: cannot parse {shown!r}: expected 'Key = value'{more}") from None
        raise ctx.fail(f"cannot parse: {exc}") from None
    except configparser.Error as exc:
        raise ctx.fail(f"cannot parse: {exc}") from None

    sections: dict[str, _Section] = {}
    for name in parser.sections():
        folded = name.strip().lower()
        if folded in sections:
            raise ctx.fail(f"section [{name}] appears twice (also as [{sections[folded].name}]); "
                           "section names are case-insensitive")
        entries: dict[str, _Entry] = {}
        for key, value in parser.items(name, raw=True):
            fkey = key.lower()
            if fkey in entries:
                raise ctx.fail(f"[{name}] {key} appears twice (also as {entries[fkey].key}); "
                               "keys are case-insensitive")
            entries[fkey] = _Entry(key, value)
        sections[folded] = _Section(name, entries)
    return sections


def _closest(word: str, candidates: tuple[str, ...]) -> str | None:
    """The canonical candidate ``word`` is an obvious typo of, if any."""
    by_lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[match[0]] if match else None


def _unknown_warnings(sections: Mapping[str, _Section], schema: Mapping[str, tuple[str, ...]],
                      ctx: _Context) -> list[str]:
    """One warning per unknown section and per unknown key in a known section."""
    warnings: list[str] = []
    canonical_sections = tuple(schema)
    for folded, section in sections.items():
        known_section = next((s for s in canonical_sections if s.lower() == folded), None)
        if known_section is None:
            hint = _closest(section.name, canonical_sections)
            suffix = f" (did you mean [{hint}]?)" if hint else ""
            warnings.append(ctx.warning(f"[{section.name}]: unknown section, ignored{suffix}"))
            continue
        known_keys = schema[known_section]
        for fkey, entry in section.entries.items():
            if any(k.lower() == fkey for k in known_keys):
                continue
            # A known key in the wrong section is a likelier mistake than a typo: say where it belongs.
            home = next((s for s, keys in schema.items() if any(k.lower() == fkey for k in keys)), None)
            if home is not None:
                canonical = next(k for k in schema[home] if k.lower() == fkey)
                hint = f" ({canonical} belongs in [{home}])"
            else:
                close = _closest(entry.key, known_keys)
                hint = f" (did you mean {close}?)" if close else ""
            warnings.append(ctx.warning(f"[{known_section}] {entry.key}: unknown key, ignored{hint}"))
    return warnings


# --- small named validators: each takes the raw text and returns a value or a reason ------------------

class _Invalid(InvalidValue):
    """A value failed validation; the message is the reason shown after the value."""


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Invalid("not a number") from None
    if not math.isfinite(value):
        raise _Invalid("not a finite number")
    return value


def _positive_number(text: str) -> float:
    try:
        value = _number(text)
    except _Invalid:
        raise _Invalid("not a positive number") from None
    if value <= 0:
        raise _Invalid("not a positive number")
    return value


def _non_negative_number(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise _Invalid("must be 0 or more")
    return value


def _optional_limit(text: str) -> float | None:
    """A limit where 0 means "no limit"."""
    value = _non_negative_number(text)
    return None if value == 0 else value


def _max_processes(text: str) -> int | None:
    """MaxProcesses: processes + threads of one run, a whole number; 0 means no cap (like the other limits).

    1 is allowed: the task process alone, which then cannot start a thread or a subprocess."""
    try:
        value = int(text, 10)
    except ValueError:
        raise _Invalid("not a whole number (processes and threads of one run; 0 = no cap)") from None
    if value < 0:
        raise _Invalid("must be 0 (no cap) or more")
    if value > _MAX_PROCESSES:
        raise _Invalid(f"too large (at most {_MAX_PROCESSES}, the kernel's pid limit)")
    return None if value == 0 else value


def _every(text: str) -> timedelta:
    minutes = _positive_number(text)
    if minutes > _MAX_EVERY / timedelta(minutes=1):
        raise _Invalid(f"too large (at most {_MAX_EVERY / timedelta(minutes=1):.0f} minutes)")
    every = timedelta(minutes=minutes)
    if every <= timedelta(0):  # below timedelta's microsecond resolution
        raise _Invalid("too small (the interval rounds to zero)")
    return every


def _clock(text: str) -> time:
    match = _HHMM.fullmatch(text)
    if match is None:
        raise _Invalid("not a time of day (expected HH:MM, e.g. 08:30)")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise _Invalid("not a time of day (hours 00-23, minutes 00-59)")
    return time(hour, minute)


def _boolean(text: str) -> bool:
    folded = text.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise _Invalid("not a boolean (use true/false, yes/no, on/off or 1/0)")


def _catch_up(text: str) -> CatchUp:
    try:
        return CatchUp(text.lower())
    except ValueError:
        raise _Invalid("not a catch-up policy (use once or skip)") from None


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise _Invalid("not a whole number") from None
        if value < minimum:
            raise _Invalid(f"must be at least {minimum}")
        return value
    return parse


def _watch_debounce(text: str) -> float:
    value = _number(text)
    if value < _MIN_WATCH_DEBOUNCE_S:
        raise _Invalid(f"must be at least {_MIN_WATCH_DEBOUNCE_S:g} (seconds)")
    return value


def _listen(text: str) -> str:
    from .web.address import ListenError, parse_listen  # pure module: no web dependency needed

    try:
        listen = parse_listen(text)
    except ListenError as exc:
        raise _Invalid(str(exc)) from None
    return f"[{listen.host}]:{listen.port}" if ":" in listen.host else f"{listen.host}:{listen.port}"


def _host_list(text: str) -> tuple[str, ...]:
    hosts = tuple(h for h in text.replace(",", " ").split() if h)
    for host in hosts:
        if "/" in host or "@" in host:
            raise _Invalid(f"{host!r} is not a host name (no scheme or path: just example.org)")
    return hosts


def _installer(text: str) -> str:
    folded = text.lower()
    if folded not in _INSTALLERS:
        raise _Invalid(f"not an installer (use {' or '.join(_INSTALLERS)})")
    return folded


def _executor(text: str) -> str:
    value = text.strip().lower()
    if value not in _EXECUTORS:
        raise _Invalid(f"must be one of {', '.join(_EXECUTORS)}")
    return value


def _redis_url(text: str) -> str:
    value = text.strip()
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise _Invalid("must be a redis://, rediss:// or unix:// URL")
    return value


def _queue_name(text: str) -> str:
    value = text.strip()
    if not _QUEUE_NAME.fullmatch(value):
        raise _Invalid("must be 1-100 letters, digits and _ . : - (starting with a letter or digit)")
    return value


def _value(sections: Mapping[str, _Section], section: str, key: str, parse: Callable[[str], T],
           default: T, ctx: _Context) -> T:
    """``[section] key`` parsed by ``parse``; ``default`` when absent; ConfigError when invalid."""
    found = sections.get(section.lower())
    entry = found.entries.get(key.lower()) if found is not None else None
    if entry is None:
        return default
    try:
        return parse(entry.value)
    except InvalidValue as exc:
        raise ctx.error(section, key, entry.value, str(exc)) from None


def _has(sections: Mapping[str, _Section], section: str, key: str) -> bool:
    found = sections.get(section.lower())
    return found is not None and key.lower() in found.entries


def _parse_limits(sections: Mapping[str, _Section], defaults: Limits, ctx: _Context) -> Limits:
    """[Limits]: each missing key takes the default (the home config's limits for a task)."""
    return Limits(
        timeout_s=_value(sections, "Limits", "TimeoutSeconds", _optional_limit, defaults.timeout_s, ctx),
        kill_grace_s=_value(sections, "Limits", "KillGraceSeconds", _non_negative_number,
                            defaults.kill_grace_s, ctx),
        memory_mb=_value(sections, "Limits", "MemoryMB", _optional_limit, defaults.memory_mb, ctx),
        cpu_s=_value(sections, "Limits", "CPUSeconds", _optional_limit, defaults.cpu_s, ctx),
        max_processes=_value(sections, "Limits", "MaxProcesses", _max_processes, defaults.max_processes, ctx),
    )


def _present(sections: Mapping[str, _Section], section: str, keys: tuple[str, ...]) -> dict[str, str]:
    """The raw values of ``keys`` present in ``section``, under their canonical spelling."""
    found = sections.get(section.lower())
    if found is None:
        return {}
    return {key: found.entries[key.lower()].value for key in keys if key.lower() in found.entries}


def _parse_notify(sections: Mapping[str, _Section], defaults: NotifySettings, ctx: _Context) -> NotifySettings:
    """[Notify] (notify/settings.py validates): each key present wins over ``defaults`` (the home's)."""
    return parse_notify(_present(sections, "Notify", NOTIFY_KEYS), defaults=defaults,
                        error=lambda key, value, reason: ctx.error("Notify", key, value, reason))


def _parse_heartbeat(sections: Mapping[str, _Section], ctx: _Context) -> HeartbeatSettings:
    return parse_heartbeat(_present(sections, "Supervisor", HEARTBEAT_KEYS),
                           error=lambda key, value, reason: ctx.error("Supervisor", key, value, reason))
def _parse_retry(sections: Mapping[str, _Section], defaults: RetryPolicy, ctx: _Context) -> RetryPolicy:
    """[Retry]: each missing key takes the default (the home config's [Retry] for a task)."""
    return RetryPolicy(
        attempts=_value(sections, "Retry", "Attempts", _integer(0), defaults.attempts, ctx),
        delay_s=_value(sections, "Retry", "DelaySeconds", _non_negative_number, defaults.delay_s, ctx),
        backoff=_value(sections, "Retry", "Backoff", backoff, defaults.backoff, ctx),
        max_delay_s=_value(sections, "Retry", "MaxDelaySeconds", _non_negative_number, defaults.max_delay_s, ctx),
        on=_value(sections, "Retry", "On", retry_on, defaults.on, ctx),
    )


def _schedule_key(sections: Mapping[str, _Section], ctx: _Context) -> str:
    """The one schedule key present; none or several is an error naming them."""
    present = [key for key in _SCHEDULE_KEYS if _has(sections, "Frequency", key)]
    if len(present) == 1:
        return present[0]
    if not present:
        where = "" if "frequency" in sections else " (no [Frequency] section)"
        raise ctx.fail(f"[Frequency] EveryXMinutes missing{where}: it is required (minutes between the starts "
                       "of two runs, e.g. EveryXMinutes = 60) unless the task has Cron (e.g. Cron = "
                       "30 7 * * mon-fri) or RunAt (e.g. RunAt = 2026-12-24 18:00) instead")
    found = sections["frequency"]
    shown = ", ".join(f"{found.entries[k.lower()].key} = {found.entries[k.lower()].value!r}" for k in present)
    raise ctx.fail(f"[Frequency] {' and '.join(present)} are both set ({shown}): use exactly one of "
                   "EveryXMinutes, Cron and RunAt")


def _missing_seed_warnings(sections: Mapping[str, _Section], ctx: _Context) -> list[str]:
    warnings: list[str] = []
    for section, defaults in _TASK_SEED_DEFAULTS.items():
        if section.lower() not in sections:
            used = ", ".join(f"{key} = {value}" for key, value in defaults.items())
            warnings.append(ctx.warning(f"[{section}] missing: using defaults {used}"))
            continue
        for key, value in defaults.items():
            if not _has(sections, section, key):
                warnings.append(ctx.warning(f"[{section}] {key} missing: using default {value}"))
    return warnings


# --- public API ---------------------------------------------------------------------------------------

def parse_task_config(text: str, *, task: str, path: Path, defaults: Limits = Limits(),
                      notify_defaults: NotifySettings = NotifySettings(),
                      retry_defaults: RetryPolicy = RetryPolicy()) -> ConfigResult:
    """Parse a task's config.ini text. ``path`` is only used in messages.

    Raises ConfigError for a syntax error, a duplicate section/key, no or several schedule keys or any
    present but invalid value (the first one found, in schema order). Missing [Limits] keys take
    ``defaults``, missing [Notify] keys ``notify_defaults``, missing [Retry] keys ``retry_defaults`` (all
    from the home config).
    """
    ctx = _Context(path, task)
    sections = _parse_sections(text, ctx)
    kind = _schedule_key(sections, ctx)
    every = _value(sections, "Frequency", "EveryXMinutes", _every, None, ctx) if kind == "EveryXMinutes" else None
    cron = _value(sections, "Frequency", "Cron", cron_expression, None, ctx) if kind == "Cron" else None
    no_times: tuple[datetime, ...] = ()
    run_at = _value(sections, "Frequency", "RunAt", run_at_times, no_times, ctx) if kind == "RunAt" else no_times
    window = Window(
        start=_value(sections, "Frequency", "AllowedFrom", _clock, Window().start, ctx),
        end=_value(sections, "Frequency", "AllowedTo", _clock, Window().end, ctx),
    )
    if cron is not None and not cron_meets_window(cron, window):
        entry = sections["frequency"].entries["cron"]
        raise ctx.error("Frequency", "Cron", entry.value, f"no slot lies inside the window AllowedFrom-AllowedTo "
                        f"({window}): the task would never run")
    spec = TaskSpec(
        name=task,
        every=every,
        window=window,
        catch_up=_value(sections, "Frequency", "CatchUp", _catch_up, CatchUp.ONCE, ctx),
        enabled=_value(sections, "Global", "Enabled", _boolean, True, ctx),
        testing=_value(sections, "Global", "Testing", _boolean, False, ctx),
        run_on_startup=_value(sections, "Global", "RunOnStartup", _boolean, False, ctx),
        queue=_value(sections, "Global", "Queue", _queue_name, "default", ctx),
        limits=_parse_limits(sections, defaults, ctx),
        notify=_parse_notify(sections, notify_defaults, ctx),
        cron=cron,
        run_at=run_at,
        time_zone=_value(sections, "Frequency", "TimeZone", time_zone, None, ctx),
        jitter_s=_value(sections, "Frequency", "JitterSeconds", jitter_seconds, 0.0, ctx),
        retry=_parse_retry(sections, retry_defaults, ctx),
    )
    warnings = _unknown_warnings(sections, _TASK_SCHEMA, ctx) + _missing_seed_warnings(sections, ctx)
    return ConfigResult(spec=spec, warnings=tuple(warnings))


def read_task_config(path: Path, *, task: str, defaults: Limits = Limits(),
                     notify_defaults: NotifySettings = NotifySettings(),
                     retry_defaults: RetryPolicy = RetryPolicy()) -> ConfigResult:
    """Read and parse ``path``; unreadable or non-UTF-8 files are a ConfigError naming the cause."""
    return parse_task_config(_read_text(path, _Context(path, task)), task=task, path=path, defaults=defaults,
                             notify_defaults=notify_defaults, retry_defaults=retry_defaults)


def parse_home_config(text: str, *, path: Path) -> tuple[HomeConfig, tuple[str, ...]]:
    """Parse the home's taskautomation.ini text. Every key is optional and silently defaulted.

    Unknown sections/keys are returned as warnings; invalid values raise ConfigError naming the file,
    section, key and value. [Limits] becomes HomeConfig.limits, the defaults for every task's [Limits];
    [Retry] becomes HomeConfig.retry likewise.
    """
    ctx = _Context(path, None)
    sections = _parse_sections(text, ctx)
    base = HomeConfig()
    config = HomeConfig(
        installer=_value(sections, "Supervisor", "Installer", _installer, base.installer, ctx),
        keep_runs=_value(sections, "Supervisor", "KeepRuns", _integer(1), base.keep_runs, ctx),
        log_max_bytes=_value(sections, "Supervisor", "LogMaxBytes", _integer(1024), base.log_max_bytes, ctx),
        log_backups=_value(sections, "Supervisor", "LogBackups", _integer(0), base.log_backups, ctx),
        output_cap_bytes=_value(sections, "Supervisor", "OutputCapBytes", _integer(1024),
                                base.output_cap_bytes, ctx),
        watch_debounce_s=_value(sections, "Supervisor", "WatchDebounceSeconds", _watch_debounce,
                                base.watch_debounce_s, ctx),
        max_concurrent_runs=_value(sections, "Supervisor", "MaxConcurrentRuns", _integer(1),
                                   base.max_concurrent_runs, ctx),
        executor=_value(sections, "Supervisor", "Executor", _executor, base.executor, ctx),
        redis_url=_value(sections, "Supervisor", "RedisUrl", _redis_url, base.redis_url, ctx),
        limits=_parse_limits(sections, base.limits, ctx),
        notify=_parse_notify(sections, base.notify, ctx),
        heartbeat=_parse_heartbeat(sections, ctx),
        retry=_parse_retry(sections, base.retry, ctx),
        web_listen=_value(sections, "Web", "Listen", _listen, base.web_listen, ctx),
        web_allowed_hosts=_value(sections, "Web", "AllowedHosts", _host_list, base.web_allowed_hosts, ctx),
    )
    if config.executor == "rq" and not config.redis_url:
        raise ctx.error("Supervisor", "Executor", "rq", "needs [Supervisor] RedisUrl (e.g. redis://127.0.0.1:6379/0)")
    return config, tuple(_unknown_warnings(sections, _HOME_SCHEMA, ctx))


def read_home_config(path: Path) -> tuple[HomeConfig, tuple[str, ...]]:
    """Read the optional home config: a missing file means all defaults and no warnings."""
    ctx = _Context(path, None)
    try:
        text = _read_text(path, ctx, missing_ok=True)
    except FileNotFoundError:
        return HomeConfig(), ()
    return parse_home_config(text, path=path)


def _read_text(path: Path, ctx: _Context, *, missing_ok: bool = False) -> str:
    """The file's text, decoded as UTF-8 (a BOM is accepted: Windows editors add one).

    Read through :mod:`.safefile`: a FIFO, device or directory named config.ini, a symlink loop or a file
    over the 1 MiB cap is a ConfigError naming the cause, never a blocked or unbounded read.
    """
    try:
        return safefile.read_text(path, max_bytes=safefile.CONFIG_MAX_BYTES)
    except FileNotFoundError:
        if missing_ok:
            raise
        raise ctx.fail("cannot read: file does not exist") from None
    except UnsafeFileError as exc:
        raise ctx.fail(exc.reason) from None
