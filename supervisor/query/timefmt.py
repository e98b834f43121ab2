"""How durations and relative times read, the same in the CLI and on the dashboard (pure; no clock read).

Policy: one ladder of units — ``s``, ``min``, ``h``, ``day``/``days`` — with at most two of them, the larger
first and a zero second unit left out (``2 min 5 s``, ``2 h``, ``3 days 4 h``).

* A **duration** (how long a run took) under a minute keeps its fraction (``0.02 s``, ``12.3 s``), because
  short runs are the common case; longer ones are rounded to the second first (``2 min 5 s``, ``2 h 2 min``).
  Anything that is not a number (``null``, a key missing from a document) reads ``-``.
* A **relative time** (when something happens from a reference "now") is rounded down to the smaller unit
  shown, so ``in 4 min`` never turns up before four minutes are left: ``in 4 min 5 s``, ``3 h ago``, and
  ``now`` when less than a second lies between them.
"""

from __future__ import annotations

from datetime import timedelta

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def span(seconds: int) -> str:
    """A whole number of seconds (zero or more) on the ladder: ``45 s``, ``4 min 5 s``, ``1 day 13 h``."""
    if seconds < MINUTE:
        return f"{seconds} s"
    if seconds < HOUR:
        return _two(seconds // MINUTE, "min", seconds % MINUTE, "s")
    if seconds < DAY:
        return _two(seconds // HOUR, "h", seconds % HOUR // MINUTE, "min")
    days = seconds // DAY
    return _two(days, "day" if days == 1 else "days", seconds % DAY // HOUR, "h")


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big} {big_unit}" + (f" {small} {small_unit}" if small else "")


def duration(seconds: object) -> str:
    """How long something took: ``0.02 s``, ``12.3 s``, ``2 min 5 s``, ``2 h 2 min``; ``-`` for a non-number."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return "-"
    # Compare the rounded text, not the raw value, so 9.999 reads "10.0 s" and 59.97 reads "1 min".
    if round(seconds, 2) < 10:
        return f"{seconds:.2f} s"
    if round(seconds, 1) < MINUTE:
        return f"{seconds:.1f} s"
    return span(round(seconds))


def relative(delta: timedelta) -> str:
    """``when - now`` in words: ``in 4 min 5 s``, ``3 h ago``, ``now`` (rounded down to the unit shown)."""
    seconds = int(delta.total_seconds())  # towards zero: a second not yet over does not count, either way
    if seconds == 0:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(-seconds)} ago"
