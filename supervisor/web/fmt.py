"""How times read on the pages (pure; ``now`` is passed in, never read here).

Durations and relative times are worded by ``query.timefmt``, the same as in the CLI; this module only adapts
the ISO strings and missing keys that templates hand over.
"""

from __future__ import annotations

from datetime import datetime

from ..query import timefmt


def parse_time(iso: object) -> datetime | None:
    """An ISO time, or None for anything else (null, or a key a template found missing)."""
    return datetime.fromisoformat(iso) if isinstance(iso, str) and iso else None


def absolute(iso: object) -> str:
    """Local time, to the second: ``2026-11-29 14:05:00``."""
    when = parse_time(iso)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"


def relative(iso: object, *, now: datetime) -> str:
    """``in 4 min`` / ``3 h ago`` / ``now`` from ``now``; empty for no time."""
    when = parse_time(iso)
    return timefmt.relative(when - now) if when else ""
