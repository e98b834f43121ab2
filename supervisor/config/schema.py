"""Parse a task's ``config.ini`` into a TaskSpec and the home's ``taskautomation.ini`` into a HomeConfig.

Policy (the config keys and rules of README.md and docs/architecture.md):

- A schedule is required: exactly one of ``[Frequency] EveryXMinutes``, ``Cron``, ``RunAt`` and ``After``
  (none or two is an error naming them). Every other key has a documented default. ``After`` naming the task
  itself, or ``AfterOutcome`` without ``After``, is an error; a cycle across tasks is found by
  scheduling/chains.py (it needs every task).
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

This module is the two schemas (which sections and keys exist, their defaults, how they become a TaskSpec
or a HomeConfig); the ini core (sections, lookups, messages, reading) is inifile.py and the validators of
single values are config_values.py and schedule_keys.py.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Mapping

from ..model import (
    AfterOutcome,
    Calendar,
    CatchUp,
    ConfigResult,
    FailureBackoff,
    HeartbeatSettings,
    HomeConfig,
    Limits,
    NotifySettings,
    Retention,
    RetryPolicy,
    TaskSpec,
    Window,
)
from . import values as values
from .inifile import (
    Context,
    Section,
    has_key,
    lookup,
    parse_sections,
    present_values,
    read_text,
    unknown_warnings,
)
from .notify_keys import HEARTBEAT_KEYS, NOTIFY_KEYS, parse_heartbeat, parse_notify
from .schedule_keys import (
    after_outcome,
    after_tasks,
    backoff,
    cron_expression,
    cron_meets_window,
    jitter_seconds,
    retry_on,
    run_at_times,
    skip_dates,
    skip_holidays,
    time_zone,
)

_SCHEDULE_KEYS = ("EveryXMinutes", "Cron", "RunAt", "After")
_BACKOFF_KEYS = ("FailureBackoff", "FailureBackoffAfter")


# --- the schema: canonical spellings, used in every message ------------------------------------------

_TASK_SCHEMA: dict[str, tuple[str, ...]] = {
    "Frequency": (
        "EveryXMinutes",
        "Cron",
        "RunAt",
        "After",
        "AfterOutcome",
        "AllowedFrom",
        "AllowedTo",
        "CatchUp",
        "TimeZone",
        "JitterSeconds",
        "SkipDates",
        "SkipHolidays",
    ),
    "Global": ("Enabled", "Testing", "RunOnStartup", "Queue", *_BACKOFF_KEYS),
    "Limits": (
        "TimeoutSeconds",
        "KillGraceSeconds",
        "MemoryMB",
        "CPUSeconds",
        "MaxProcesses",
        "StartIfFreeMemoryMB",
        "StartIfLoadBelow",
    ),
    "Notify": NOTIFY_KEYS,
    "Retry": ("Attempts", "DelaySeconds", "Backoff", "MaxDelaySeconds", "On"),
    "Output": ("KeepDays", "KeepFiles", "KeepMB"),
}
# Seed keys that warn when missing, with the default as the message shows it. EveryXMinutes is required.
_TASK_SEED_DEFAULTS: dict[str, dict[str, str]] = {
    "Frequency": {"AllowedFrom": "00:00", "AllowedTo": "23:59"},
    "Global": {"Enabled": "True", "Testing": "False", "RunOnStartup": "False"},
}
_HOME_SCHEMA: dict[str, tuple[str, ...]] = {
    "Supervisor": (
        "Installer",
        "KeepRuns",
        "LogMaxBytes",
        "LogBackups",
        "OutputCapBytes",
        "WatchDebounceSeconds",
        "MaxConcurrentRuns",
        "Executor",
        "Launcher",
        "RedisUrl",
        *HEARTBEAT_KEYS,
    ),
    "Limits": _TASK_SCHEMA["Limits"],
    "Notify": NOTIFY_KEYS,
    "Retry": _TASK_SCHEMA["Retry"],
    "Global": _BACKOFF_KEYS,
    "Output": _TASK_SCHEMA["Output"],
    "Web": ("Listen", "AllowedHosts", "MetricsToken"),
}


def _parse_limits(sections: Mapping[str, Section], defaults: Limits, ctx: Context) -> Limits:
    """[Limits]: each missing key takes the default (the home config's limits for a task)."""
    return Limits(
        timeout_s=lookup(sections, "Limits", "TimeoutSeconds", values.optional_limit, defaults.timeout_s, ctx),
        kill_grace_s=lookup(
            sections, "Limits", "KillGraceSeconds", values.non_negative_number, defaults.kill_grace_s, ctx
        ),
        memory_mb=lookup(sections, "Limits", "MemoryMB", values.optional_limit, defaults.memory_mb, ctx),
        cpu_s=lookup(sections, "Limits", "CPUSeconds", values.optional_limit, defaults.cpu_s, ctx),
        max_processes=lookup(sections, "Limits", "MaxProcesses", values.max_processes, defaults.max_processes, ctx),
        start_if_free_memory_mb=lookup(
            sections, "Limits", "StartIfFreeMemoryMB", values.optional_limit, defaults.start_if_free_memory_mb, ctx
        ),
        start_if_load_below=lookup(
            sections, "Limits", "StartIfLoadBelow", values.optional_limit, defaults.start_if_load_below, ctx
        ),
    )


def _parse_notify(sections: Mapping[str, Section], defaults: NotifySettings, ctx: Context) -> NotifySettings:
    """[Notify] (config/notify_keys.py validates): each key present wins over ``defaults`` (the home's)."""
    return parse_notify(
        present_values(sections, "Notify", NOTIFY_KEYS),
        defaults=defaults,
        error=lambda key, value, reason: ctx.error("Notify", key, value, reason),
    )


def _parse_heartbeat(sections: Mapping[str, Section], ctx: Context) -> HeartbeatSettings:
    return parse_heartbeat(
        present_values(sections, "Supervisor", HEARTBEAT_KEYS),
        error=lambda key, value, reason: ctx.error("Supervisor", key, value, reason),
    )


def _parse_retry(sections: Mapping[str, Section], defaults: RetryPolicy, ctx: Context) -> RetryPolicy:
    """[Retry]: each missing key takes the default (the home config's [Retry] for a task)."""
    return RetryPolicy(
        attempts=lookup(sections, "Retry", "Attempts", values.integer(0), defaults.attempts, ctx),
        delay_s=lookup(sections, "Retry", "DelaySeconds", values.non_negative_number, defaults.delay_s, ctx),
        backoff=lookup(sections, "Retry", "Backoff", backoff, defaults.backoff, ctx),
        max_delay_s=lookup(sections, "Retry", "MaxDelaySeconds", values.non_negative_number, defaults.max_delay_s, ctx),
        on=lookup(sections, "Retry", "On", retry_on, defaults.on, ctx),
    )


def _parse_failure_backoff(sections: Mapping[str, Section], defaults: FailureBackoff, ctx: Context) -> FailureBackoff:
    """[Global] FailureBackoff (on/off) and FailureBackoffAfter (failures in a row, at least 1): each missing
    key takes the default (the home config's [Global] for a task)."""
    return FailureBackoff(
        enabled=lookup(sections, "Global", "FailureBackoff", values.boolean, defaults.enabled, ctx),
        after=lookup(sections, "Global", "FailureBackoffAfter", values.integer(1), defaults.after, ctx),
    )


def _parse_retention(sections: Mapping[str, Section], defaults: Retention, ctx: Context) -> Retention:
    """[Output] KeepDays / KeepFiles / KeepMB: each missing key takes the default (the home config's for a
    task); 0 means "no such limit", so a task can switch a home-wide limit off."""
    return Retention(
        keep_days=lookup(sections, "Output", "KeepDays", values.optional_limit, defaults.keep_days, ctx),
        keep_files=lookup(sections, "Output", "KeepFiles", values.keep_files, defaults.keep_files, ctx),
        keep_mb=lookup(sections, "Output", "KeepMB", values.optional_limit, defaults.keep_mb, ctx),
    )


def _parse_calendar(sections: Mapping[str, Section], ctx: Context) -> Calendar:
    days = lookup(sections, "Frequency", "SkipDates", skip_dates, Calendar(), ctx)
    no_codes: tuple[str, ...] = ()
    codes = lookup(sections, "Frequency", "SkipHolidays", skip_holidays, no_codes, ctx)
    return replace(days, holidays=codes)


def _schedule_key(sections: Mapping[str, Section], ctx: Context) -> str:
    """The one schedule key present; none or several is an error naming them."""
    present = [key for key in _SCHEDULE_KEYS if has_key(sections, "Frequency", key)]
    if len(present) == 1:
        return present[0]
    if not present:
        where = "" if "frequency" in sections else " (no [Frequency] section)"
        raise ctx.fail(
            f"[Frequency] EveryXMinutes missing{where}: it is required (minutes between the starts "
            "of two runs, e.g. EveryXMinutes = 60) unless the task has Cron (e.g. Cron = "
            "30 7 * * mon-fri), RunAt (e.g. RunAt = 2026-12-24 18:00) or After (e.g. After = backup) instead"
        )
    found = sections["frequency"]
    shown = ", ".join(f"{found.entries[k.lower()].key} = {found.entries[k.lower()].value!r}" for k in present)
    raise ctx.fail(
        f"[Frequency] {' and '.join(present)} are both set ({shown}): "
        "use exactly one of EveryXMinutes, Cron, RunAt and After"
    )


def _parse_after(sections: Mapping[str, Section], ctx: Context) -> tuple[str, ...]:
    """[Frequency] After: the upstream tasks; naming the task itself is the shortest cycle."""
    after: tuple[str, ...] = lookup(sections, "Frequency", "After", after_tasks, (), ctx)
    if ctx.task in after:
        entry = sections["frequency"].entries["after"]
        raise ctx.error("Frequency", "After", entry.value, f"names the task itself: a cycle {ctx.task} -> {ctx.task}")
    return after


def _parse_after_outcome(sections: Mapping[str, Section], after: tuple[str, ...], ctx: Context) -> AfterOutcome:
    outcome = lookup(sections, "Frequency", "AfterOutcome", after_outcome, AfterOutcome.OK, ctx)
    if not after and has_key(sections, "Frequency", "AfterOutcome"):
        entry = sections["frequency"].entries["afteroutcome"]
        raise ctx.error("Frequency", "AfterOutcome", entry.value, "needs [Frequency] After (the upstream tasks)")
    return outcome


def _missing_seed_warnings(sections: Mapping[str, Section], ctx: Context) -> list[str]:
    warnings: list[str] = []
    for section, defaults in _TASK_SEED_DEFAULTS.items():
        if section.lower() not in sections:
            used = ", ".join(f"{key} = {value}" for key, value in defaults.items())
            warnings.append(ctx.warning(f"[{section}] missing: using defaults {used}"))
            continue
        for key, value in defaults.items():
            if not has_key(sections, section, key):
                warnings.append(ctx.warning(f"[{section}] {key} missing: using default {value}"))
    return warnings


# --- public API ---------------------------------------------------------------------------------------


def parse_task_config(
    text: str,
    *,
    task: str,
    path: Path,
    defaults: Limits = Limits(),
    notify_defaults: NotifySettings = NotifySettings(),
    retry_defaults: RetryPolicy = RetryPolicy(),
    backoff_defaults: FailureBackoff = FailureBackoff(),
    retention_defaults: Retention = Retention(),
) -> ConfigResult:
    """Parse a task's config.ini text. ``path`` is only used in messages.

    Raises ConfigError for a syntax error, a duplicate section/key, no or several schedule keys or any
    present but invalid value (the first one found, in schema order). Missing [Limits] keys take
    ``defaults``, missing [Notify] keys ``notify_defaults``, missing [Retry] keys ``retry_defaults``, missing
    FailureBackoff keys ``backoff_defaults``, missing [Output] keys ``retention_defaults`` (all from the home
    config).
    """
    ctx = Context(path, task)
    sections = parse_sections(text, ctx)
    kind = _schedule_key(sections, ctx)
    every = lookup(sections, "Frequency", "EveryXMinutes", values.every, None, ctx) if kind == "EveryXMinutes" else None
    cron = lookup(sections, "Frequency", "Cron", cron_expression, None, ctx) if kind == "Cron" else None
    no_times: tuple[datetime, ...] = ()
    run_at = lookup(sections, "Frequency", "RunAt", run_at_times, no_times, ctx) if kind == "RunAt" else no_times
    after = _parse_after(sections, ctx) if kind == "After" else ()
    window = Window(
        start=lookup(sections, "Frequency", "AllowedFrom", values.clock, Window().start, ctx),
        end=lookup(sections, "Frequency", "AllowedTo", values.clock, Window().end, ctx),
    )
    _check_cron_window(cron, window, sections, ctx)
    spec = TaskSpec(
        name=task,
        every=every,
        window=window,
        catch_up=lookup(sections, "Frequency", "CatchUp", values.catch_up, CatchUp.ONCE, ctx),
        enabled=lookup(sections, "Global", "Enabled", values.boolean, True, ctx),
        testing=lookup(sections, "Global", "Testing", values.boolean, False, ctx),
        run_on_startup=lookup(sections, "Global", "RunOnStartup", values.boolean, False, ctx),
        queue=lookup(sections, "Global", "Queue", values.queue_name, "default", ctx),
        limits=_parse_limits(sections, defaults, ctx),
        notify=_parse_notify(sections, notify_defaults, ctx),
        cron=cron,
        run_at=run_at,
        time_zone=lookup(sections, "Frequency", "TimeZone", time_zone, None, ctx),
        jitter_s=lookup(sections, "Frequency", "JitterSeconds", jitter_seconds, 0.0, ctx),
        retry=_parse_retry(sections, retry_defaults, ctx),
        failure_backoff=_parse_failure_backoff(sections, backoff_defaults, ctx),
        calendar=_parse_calendar(sections, ctx),
        after=after,
        after_outcome=_parse_after_outcome(sections, after, ctx),
        retention=_parse_retention(sections, retention_defaults, ctx),
    )
    warnings = unknown_warnings(sections, _TASK_SCHEMA, ctx) + _missing_seed_warnings(sections, ctx)
    return ConfigResult(spec=spec, warnings=tuple(warnings))


def _check_cron_window(cron: str | None, window: Window, sections: Mapping[str, Section], ctx: Context) -> None:
    """A Cron whose every slot lies outside the window would never run: a config error, not a silent task."""
    if cron is not None and not cron_meets_window(cron, window):
        raise ctx.error(
            "Frequency",
            "Cron",
            sections["frequency"].entries["cron"].value,
            f"no slot lies inside the window AllowedFrom-AllowedTo ({window}): the task would never run",
        )


def read_task_config(
    path: Path,
    *,
    task: str,
    defaults: Limits = Limits(),
    notify_defaults: NotifySettings = NotifySettings(),
    retry_defaults: RetryPolicy = RetryPolicy(),
    backoff_defaults: FailureBackoff = FailureBackoff(),
    retention_defaults: Retention = Retention(),
) -> ConfigResult:
    """Read and parse ``path``; unreadable or non-UTF-8 files are a ConfigError naming the cause."""
    return parse_task_config(
        read_text(path, Context(path, task)),
        task=task,
        path=path,
        defaults=defaults,
        notify_defaults=notify_defaults,
        retry_defaults=retry_defaults,
        backoff_defaults=backoff_defaults,
        retention_defaults=retention_defaults,
    )


def parse_home_config(text: str, *, path: Path) -> tuple[HomeConfig, tuple[str, ...]]:
    """Parse the home's taskautomation.ini text. Every key is optional and silently defaulted.

    Unknown sections/keys are returned as warnings; invalid values raise ConfigError naming the file,
    section, key and value. [Limits] becomes HomeConfig.limits, the defaults for every task's [Limits];
    [Retry] becomes HomeConfig.retry likewise, and [Global] FailureBackoff(After) HomeConfig.failure_backoff.
    """
    ctx = Context(path, None)
    sections = parse_sections(text, ctx)
    base = HomeConfig()
    config = HomeConfig(
        installer=lookup(sections, "Supervisor", "Installer", values.installer, base.installer, ctx),
        keep_runs=lookup(sections, "Supervisor", "KeepRuns", values.integer(1), base.keep_runs, ctx),
        log_max_bytes=lookup(sections, "Supervisor", "LogMaxBytes", values.integer(1024), base.log_max_bytes, ctx),
        log_backups=lookup(sections, "Supervisor", "LogBackups", values.integer(0), base.log_backups, ctx),
        output_cap_bytes=lookup(
            sections, "Supervisor", "OutputCapBytes", values.integer(1024), base.output_cap_bytes, ctx
        ),
        watch_debounce_s=lookup(
            sections, "Supervisor", "WatchDebounceSeconds", values.watch_debounce, base.watch_debounce_s, ctx
        ),
        max_concurrent_runs=lookup(
            sections, "Supervisor", "MaxConcurrentRuns", values.integer(1), base.max_concurrent_runs, ctx
        ),
        executor=lookup(sections, "Supervisor", "Executor", values.executor, base.executor, ctx),
        launcher=lookup(sections, "Supervisor", "Launcher", values.launcher, base.launcher, ctx),
        redis_url=lookup(sections, "Supervisor", "RedisUrl", values.redis_url, base.redis_url, ctx),
        limits=_parse_limits(sections, base.limits, ctx),
        notify=_parse_notify(sections, base.notify, ctx),
        heartbeat=_parse_heartbeat(sections, ctx),
        retry=_parse_retry(sections, base.retry, ctx),
        failure_backoff=_parse_failure_backoff(sections, base.failure_backoff, ctx),
        retention=_parse_retention(sections, base.retention, ctx),
        web_listen=lookup(sections, "Web", "Listen", values.listen, base.web_listen, ctx),
        web_allowed_hosts=lookup(sections, "Web", "AllowedHosts", values.host_list, base.web_allowed_hosts, ctx),
        web_metrics_token=lookup(
            sections,
            "Web",
            "MetricsToken",
            values.metrics_token,
            base.web_metrics_token,
            ctx,
            shown=values.secret_shown,
        ),
    )
    if config.executor == "rq" and not config.redis_url:
        raise ctx.error("Supervisor", "Executor", "rq", "needs [Supervisor] RedisUrl (e.g. redis://127.0.0.1:6379/0)")
    return config, tuple(unknown_warnings(sections, _HOME_SCHEMA, ctx))


def read_home_config(path: Path) -> tuple[HomeConfig, tuple[str, ...]]:
    """Read the optional home config: a missing file means all defaults and no warnings."""
    ctx = Context(path, None)
    try:
        text = read_text(path, ctx, missing_ok=True)
    except FileNotFoundError:
        return HomeConfig(), ()
    config, warnings = parse_home_config(text, path=path)
    if config.web_metrics_token is not None and _readable_by_others(path):
        warnings += (
            ctx.warning(f"[Web] MetricsToken is a secret but the file is readable by others; run chmod 600 {path}"),
        )
    return config, warnings


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False
