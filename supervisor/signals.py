"""Signal numbers as the history, the log and error messages name them (pure)."""

from __future__ import annotations

import signal


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number that names no signal on this machine."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
