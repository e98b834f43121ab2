"""How times and durations read on the pages (pure; ``now`` is passed in, never read here)."""

from __future__ import annotations

from datetime import datetime


def parse_time(iso: object) -> datetime | None:
    """An ISO time, or None for anything else (null, or a key a template found missing)."""
    return datetime.fromisoformat(iso) if isinstance(iso, str) and iso else None


def absolute(iso: object) -> str:
    """Local time, to the second: ``2026-11-29 14:05:00``."""
    when = parse_time(iso)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "-"


def relative(iso: object, *, now: datetime) -> str:
    """``in 4 min`` / ``3 h ago`` / ``now``."""
    when = parse_time(iso)
    if when is None:
        return ""
    delta = (when - now).total_seconds()
    span = abs(delta)
    if span < 5:
        return "now"
    if span < 60:
        text = f"{span:.0f} s"
    elif span < 3600:
        text = f"{span / 60:.0f} min"
    elif span < 86400 * 2:
        text = f"{span / 3600:.1f} h".replace(".0 h", " h")
    else:
        text = f"{span / 86400:.0f} days"
    return f"in {text}" if delta > 0 else f"{text} ago"


def duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
