"""A run's row (pure): RunRecord <-> SQLite row, the stable JSON shape of a run, and the time and message
encodings the history stores.

Datetimes are ISO-8601 UTC text with microseconds (text order is time order); they read back as aware UTC.
Messages longer than MESSAGE_CAP keep their head and tail around a marker, because a traceback's last lines
name the exception.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..model import MissedReason, Outcome, RunRecord, Trigger

MESSAGE_CAP = 64 * 1024
"""Longest message stored, in characters; longer ones keep their head and tail around a marker."""

_MESSAGE_HEAD = 16 * 1024  # the rest of the cap goes to the tail, where a traceback names its exception


def record_to_json(record: RunRecord) -> dict[str, object]:
    """The stable JSON shape of a run for ``history --json`` and ``status --json``.

    Times are ISO-8601 strings (UTC for rows read from the history), enums their values, paths text,
    and missing values null.
    """
    return {
        "run_id": record.run_id,
        "task": record.task,
        "trigger": Trigger(record.trigger).value,
        "due": _json_time(record.due),
        "started": _json_time(record.started),
        "finished": _json_time(record.finished),
        "outcome": None if record.outcome is None else Outcome(record.outcome).value,
        "duration_s": record.duration_s,
        "exit_code": record.exit_code,
        "signal": record.signal,
        "message": record.message,
        "peak_rss_mb": record.peak_rss_mb,
        "cpu_s": record.cpu_s,
        "log_path": None if record.log_path is None else str(record.log_path),
        "attempt": record.attempt,
        "retry_of": record.retry_of,
        "reason": None if record.reason is None else MissedReason(record.reason).value,
        "slots": record.slots,
        "upstream": record.upstream,
        "params": dict(record.params),
    }


def run_matches(record: RunRecord, *, outcomes: Sequence[Outcome] = (), since: datetime | None = None) -> bool:
    """The filter of ``HistoryStore.history``, for rows that are not in SQLite yet (write-behind queue)."""
    if outcomes and (record.outcome is None or Outcome(record.outcome) not in {Outcome(o) for o in outcomes}):
        return False
    return since is None or record.started >= since


def _json_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def encode_time(value: datetime) -> str:
    """Aware datetime -> fixed-width UTC text, so text order in SQL is time order."""
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time is ambiguous across DST and hosts; accepting it would store a guess.
        raise ValueError(f"run history needs timezone-aware datetimes, got naive {value.isoformat()}")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _encode_optional_time(value: datetime | None) -> str | None:
    return None if value is None else encode_time(value)


def decode_time(text: object) -> datetime:
    """Stored text -> aware UTC datetime; TypeError or ValueError when it is not an ISO-8601 time."""
    if not isinstance(text, str):
        raise TypeError(f"time stored as {type(text).__name__} {text!r}, expected ISO-8601 text")
    value = datetime.fromisoformat(text)
    # Rows are written as UTC; a hand-edited row without an offset is read the same way.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _decode_optional_time(text: object) -> datetime | None:
    return None if text is None else decode_time(text)


def cap_message(message: str | None) -> str | None:
    """Keep messages up to MESSAGE_CAP characters; beyond, keep head and tail around a marker."""
    if message is None or len(message) <= MESSAGE_CAP:
        return message
    tail = MESSAGE_CAP - _MESSAGE_HEAD
    dropped = len(message) - MESSAGE_CAP
    return f"{message[:_MESSAGE_HEAD]}\n[... {dropped} characters truncated ...]\n{message[-tail:]}"


def record_to_row(record: RunRecord) -> tuple[object, ...]:
    """The values of ``schema.COLUMNS`` for ``record``, in that order."""
    return (
        record.run_id,
        record.task,
        Trigger(record.trigger).value,
        _encode_optional_time(record.due),
        encode_time(record.started),
        _encode_optional_time(record.finished),
        None if record.outcome is None else Outcome(record.outcome).value,
        record.duration_s,
        record.exit_code,
        record.signal,
        cap_message(record.message),
        record.peak_rss_mb,
        record.cpu_s,
        None if record.log_path is None else str(record.log_path),
        record.attempt,
        record.retry_of,
        None if record.reason is None else MissedReason(record.reason).value,
        record.slots,
        record.upstream,
        json.dumps(dict(record.params)) if record.params else None,
    )


def row_to_record(row: tuple[object, ...]) -> RunRecord:
    """A row of ``schema.COLUMNS`` back into a RunRecord; TypeError or ValueError when it cannot be."""
    (
        run_id,
        task,
        trigger,
        due,
        started,
        finished,
        outcome,
        duration_s,
        exit_code,
        signal,
        message,
        peak_rss_mb,
        cpu_s,
        log_path,
        attempt,
        retry_of,
        reason,
        slots,
        upstream,
        params,
    ) = row
    return RunRecord(
        run_id=str(run_id),
        task=str(task),
        trigger=Trigger(trigger),
        started=decode_time(started),
        due=_decode_optional_time(due),
        finished=_decode_optional_time(finished),
        outcome=None if outcome is None else Outcome(outcome),
        duration_s=None if duration_s is None else float(duration_s),  # type: ignore[arg-type]
        exit_code=None if exit_code is None else int(exit_code),  # type: ignore[call-overload]
        signal=None if signal is None else str(signal),
        message=None if message is None else str(message),
        peak_rss_mb=None if peak_rss_mb is None else float(peak_rss_mb),  # type: ignore[arg-type]
        cpu_s=None if cpu_s is None else float(cpu_s),  # type: ignore[arg-type]
        log_path=None if log_path is None else Path(str(log_path)),
        attempt=int(attempt),  # type: ignore[call-overload]
        retry_of=None if retry_of is None else str(retry_of),
        reason=None if reason is None else MissedReason(reason),
        slots=None if slots is None else int(slots),  # type: ignore[call-overload]
        upstream=None if upstream is None else str(upstream),
        params=decode_params(params),
    )


def decode_params(text: object) -> tuple[tuple[str, str], ...]:
    """The stored ``params`` (a JSON object of text, or NULL) -> sorted pairs; ValueError when it is not one."""
    if text is None or text == "":
        return ()
    value = json.loads(str(text))
    if not isinstance(value, dict):
        raise ValueError(f"params stored as {text!r}, expected a JSON object")
    return tuple((str(k), str(v)) for k, v in value.items())
