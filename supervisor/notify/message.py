"""The words of a notice, pure: title, body, a run's log tail, and URLs with their secrets masked.

Policy (README, "Being told"): title ``NAME failed (OUTCOME)`` / ``NAME recovered`` / ``NAME missed N run(s)
(REASON)`` / ``NAME silent: no ok run for SPAN`` / ``NAME is slow: running for SPAN``; the body names host, home, task,
run id, attempt, outcome, duration, exit code or signal, the message (at most ``MESSAGE_MAX_BYTES``) and the
last ``TAIL_LINES`` log lines of the run (at most ``TAIL_MAX_BYTES``). Everything that came from the task is
passed through the task's masker; URLs shown in the supervisor's own messages lose their passwords and tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..model import NotifyEvent
from .model import Notice, RunFact

if TYPE_CHECKING:
    from .watch import TimedNotice

MESSAGE_MAX_BYTES = 1024
TAIL_LINES = 20
TAIL_MAX_BYTES = 4096
PING_BODY_MAX_BYTES = 10 * 1024
LOG_WINDOW_BYTES = 256 * 1024  # how far back in the task's log the run's lines are looked for

# A record of the task log starts with the logging timestamp; anything else continues the record above it
# (a traceback logged as one multi-line record).
_RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")

Mask = Callable[[str], str]


def clip(text: str, max_bytes: int, *, keep: str = "head") -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 (never mid-character), marked with ``…`` where it was cut."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    marker = "…"
    room = max(0, max_bytes - len(marker.encode()))
    if keep == "head":
        return data[:room].decode("utf-8", "ignore") + marker
    return marker + data[len(data) - room :].decode("utf-8", "ignore")


def run_lines(log_text: str, run_id: str) -> list[str]:
    """The lines of ``log_text`` that belong to run ``run_id`` (with the continuation lines of its records)."""
    selected: list[str] = []
    inside = False
    for line in log_text.splitlines():
        if _RECORD_START.match(line):
            inside = run_id in line
        if inside:
            selected.append(line)
    return selected


def tail(lines: list[str], *, max_lines: int | None, max_bytes: int) -> str:
    """The last lines (at most ``max_lines``) whose text fits in ``max_bytes``, oldest first."""
    chosen: list[str] = []
    size = 0
    for line in reversed(lines if max_lines is None else lines[-max_lines:]):
        cost = len(line.encode("utf-8")) + 1
        if size + cost > max_bytes:
            if not chosen:  # one huge line: keep its end rather than nothing
                chosen.append(clip(line, max_bytes - 1, keep="tail"))
            break
        chosen.append(line)
        size += cost
    return "\n".join(reversed(chosen))


def read_run_lines(log_path: Path | None, run_id: str) -> list[str]:
    """The run's lines from the end of its task log; [] when the log cannot be read (a notice still goes)."""
    if log_path is None:
        return []
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_WINDOW_BYTES))
            data = f.read(LOG_WINDOW_BYTES)
    except OSError:
        return []
    return run_lines(data.decode("utf-8", "replace"), run_id)


@dataclass(frozen=True)
class Origin:
    """Where the supervisor runs: named in every notice so a user with several machines knows which."""

    host: str
    home: Path


def _title(fact: RunFact, event: NotifyEvent) -> str:
    if event is NotifyEvent.FAILURE:
        return f"{fact.task} failed ({fact.outcome})"
    if event is NotifyEvent.RECOVERY:
        return f"{fact.task} recovered"
    if event is NotifyEvent.SUCCESS:
        return f"{fact.task} succeeded"
    if event is NotifyEvent.MISSED:
        slots = fact.slots or 1
        return f"{fact.task} missed {slots} run{'s' if slots != 1 else ''} ({fact.reason or 'no reason recorded'})"
    return f"{fact.task}: test notice"


_REASONS = {
    "down": "the supervisor was not running",
    "error": "the task was in error",
    "env": "its environment failed or is missing",
    "queue": "a queued run was dropped when its next slot came",
    "gate": "a start gate stayed closed",
}


def span(seconds: float) -> str:
    """A duration for people: ``45 s``, ``90 min``, ``26 h``, ``3 d`` (to one decimal where it matters)."""
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 120 * 60), ("h", 3600, 72 * 3600), ("d", 86400, None)):
        if up_to is None or seconds < up_to:
            return f"{seconds / size:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


def _at(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "unknown"


def _missed_lines(fact: RunFact) -> list[str]:
    why = _REASONS.get(fact.reason or "", "")
    lines = [f"reason: {fact.reason or 'unknown'}" + (f" ({why})" if why else ""), f"missed slots: {fact.slots or 1}"]
    lines.append(f"first slot (due): {_at(fact.due)}")
    if fact.finished is not None and fact.due is not None and fact.finished != fact.due:
        lines.append(f"last slot: {_at(fact.finished)} (span {span((fact.finished - fact.due).total_seconds())})")
    return lines


def render(fact: RunFact, event: NotifyEvent, *, origin: Origin, log_lines: list[str], mask: Mask) -> Notice:
    """The notice for ``event`` about ``fact``; every part that came from the task is masked."""
    message = clip(mask((fact.message or "").strip()), MESSAGE_MAX_BYTES)
    outcome = fact.outcome
    if event is NotifyEvent.FAILURE and fact.consecutive_failures > 1:
        outcome += f" ({fact.consecutive_failures} failed runs in a row)"
    lines = [
        f"host: {origin.host}",
        f"home: {origin.home}",
        f"task: {fact.task}",
        f"run: {fact.run_id}",
        f"attempt: {fact.attempt}",
        f"outcome: {outcome}",
    ]
    if event is NotifyEvent.MISSED:
        lines += _missed_lines(fact)
    elif fact.duration_s is not None:
        lines.append(f"duration: {fact.duration_s:.2f} s")
    if fact.signal:
        lines.append(f"signal: {fact.signal}")
    elif fact.exit_code is not None:
        lines.append(f"exit code: {fact.exit_code}")
    if message:
        lines += ["", "message:", message]
    log_tail = tail([mask(line) for line in log_lines], max_lines=TAIL_LINES, max_bytes=TAIL_MAX_BYTES)
    if log_tail:
        lines += ["", f"last {TAIL_LINES} log lines of the run:", log_tail]
    return Notice(
        task=fact.task,
        run_id=fact.run_id,
        event=event,
        outcome=fact.outcome,
        title=_title(fact, event),
        body="\n".join(lines),
        message=message,
    )


def ping_body(log_lines: list[str], *, mask: Mask) -> bytes:
    """The body of an ok/fail ping: the run's log tail, masked, at most ``PING_BODY_MAX_BYTES``."""
    return tail([mask(line) for line in log_lines], max_lines=None, max_bytes=PING_BODY_MAX_BYTES).encode("utf-8")


def render_timed(notice: TimedNotice, *, now: datetime, origin: Origin, log_lines: list[str], mask: Mask) -> Notice:
    """A silent or slow notice (watch.py decided it); a slow one ends with the run's lines so far."""
    watch = notice.watch
    lines = [f"host: {origin.host}", f"home: {origin.home}", f"task: {notice.task}"]
    if notice.event is NotifyEvent.SLOW and notice.run is not None:
        running = span((now - notice.run.started).total_seconds())
        title = f"{notice.task} is slow: running for {running}"
        lines += [f"run: {notice.run.run_id}", f"started: {_at(notice.run.started)}", f"running for: {running}"]
        lines.append(f"slow after: {span(notice.threshold_s or 0.0)} ({_slow_why(notice)})")
        run_id, outcome = notice.run.run_id, "running"
    else:
        within = watch.settings.expect_ok_within or timedelta(0)
        title = f"{notice.task} {'still ' if notice.repeat else ''}silent: no ok run for {span(within.total_seconds())}"
        last = _at(watch.last_ok) if watch.last_ok is not None else f"none since {_at(watch.since)} (watched since)"
        lines += [f"expected: an ok run at least every {span(within.total_seconds())} (ExpectOkWithin)"]
        lines += [f"last ok run ended: {last}"]
        run_id, outcome = "", "silent"
    log_tail = tail([mask(line) for line in log_lines], max_lines=TAIL_LINES, max_bytes=TAIL_MAX_BYTES)
    if log_tail:
        lines += ["", f"last {TAIL_LINES} log lines of the run so far:", log_tail]
    return Notice(
        task=notice.task, run_id=run_id, event=notice.event, outcome=outcome, title=title, body="\n".join(lines)
    )


def _slow_why(notice: TimedNotice) -> str:
    settings = notice.watch.settings
    if settings.slow_after_s is not None and notice.threshold_s == settings.slow_after_s:
        return f"SlowAfterSeconds = {settings.slow_after_s:g}"
    return f"SlowFactor = {settings.slow_factor:g} x the median of the last {len(notice.watch.ok_durations)} ok runs"
