"""The dashboard's timeline counts: runs per task, time bin and outcome, grouped by SQLite itself."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import HistoryStoreError
from .rows import decode_time, encode_time


@dataclass(frozen=True)
class OutcomeBin:
    """How many runs of one task started in one time bin with one outcome (None: still open)."""

    task: str
    bin: int
    outcome: str | None
    count: int
    first: datetime  # earliest start in the bin
    last: datetime  # latest end in the bin
    run_id: str  # one of them (the only one when count is 1)


def read_outcome_bins(
    conn: sqlite3.Connection, tasks: list[str], since: datetime, *, bin_s: float, now: datetime, path: Path
) -> list[OutcomeBin]:
    """HistoryStore.outcome_bins on an open connection (the grouping goes through the (task, started) index)."""
    marks = ", ".join("?" * len(tasks))
    start = encode_time(since)
    rows = conn.execute(
        "SELECT task, CAST(MAX(julianday(started) - julianday(?), 0) * 86400 / ? AS INTEGER) AS bin, "
        "outcome, COUNT(*), MIN(started), MAX(COALESCE(finished, ?)), MIN(run_id) FROM ("
        f"  SELECT * FROM runs WHERE task IN ({marks}) AND started >= ?"
        f"  UNION ALL SELECT * FROM runs WHERE task IN ({marks}) AND outcome IS NULL AND started < ?"
        ") GROUP BY task, bin, outcome ORDER BY task, bin",
        (start, bin_s, encode_time(now), *tasks, start, *tasks, start),
    ).fetchall()
    try:
        return [
            OutcomeBin(
                task=str(task),
                bin=int(b),
                outcome=None if o is None else str(o),
                count=int(n),
                first=decode_time(first),
                last=decode_time(last),
                run_id=str(run_id),
            )
            for task, b, o, n, first, last, run_id in rows
        ]
    except (ValueError, TypeError) as exc:
        raise HistoryStoreError(f"run history {path}: recent runs cannot be read: {exc}") from exc
