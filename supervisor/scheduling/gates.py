"""Start gates (``[Limits] StartIfFreeMemoryMB``, ``StartIfLoadBelow``): whether the machine has room for a
run to start now. Pure but for the probe, which is injected (``HostProbe`` reads the real machine; tests hand
the loop a fake one).

Policies:
* A gate is closed while the measured value is on the wrong side of its threshold: free memory (the kernel's
  ``MemAvailable``, in MiB) below ``StartIfFreeMemoryMB``, or the 1-minute load average divided by the number
  of cores at or above ``StartIfLoadBelow``. The memory gate is checked first; the first closed gate is the
  one reported.
* A value the probe cannot read (no /proc/meminfo, no load average) opens its gate: a gate must never hold
  runs back for ever on a machine that cannot measure it.
* What a gate does to a due run (it waits in the queue, the next slot drops it) is the run book's policy
  (core/runbook.py); this module only answers "open, or closed because ...".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..model import Limits

MEMINFO = Path("/proc/meminfo")


class Probe(Protocol):
    """What the gates measure; each value is None when it cannot be read."""

    def free_memory_mb(self) -> float | None: ...

    def load_per_core(self) -> float | None: ...


class HostProbe:
    """The real machine: ``MemAvailable`` from /proc/meminfo, ``os.getloadavg()`` per core."""

    def __init__(self, *, meminfo: Path = MEMINFO) -> None:
        self._meminfo = meminfo

    def free_memory_mb(self) -> float | None:
        try:
            text = self._meminfo.read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        return parse_mem_available_mb(text)

    def load_per_core(self) -> float | None:
        try:
            one_minute = os.getloadavg()[0]
        except OSError:
            return None
        return one_minute / (os.cpu_count() or 1)


def parse_mem_available_mb(meminfo: str) -> float | None:
    """MiB of ``MemAvailable`` in the text of /proc/meminfo (given in kB there), or None when absent."""
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            fields = rest.split()
            try:
                return int(fields[0]) / 1024
            except (IndexError, ValueError):
                return None
    return None


def has_gates(limits: Limits) -> bool:
    return limits.start_if_free_memory_mb is not None or limits.start_if_load_below is not None


def closed_gate(limits: Limits, probe: Probe) -> str | None:
    """None when every gate of ``limits`` is open; otherwise which gate is closed and the current value."""
    need_mb = limits.start_if_free_memory_mb
    if need_mb is not None:
        free = probe.free_memory_mb()
        if free is not None and free < need_mb:
            return f"start gate StartIfFreeMemoryMB = {need_mb:g}: {free:.0f} MB free"
    below = limits.start_if_load_below
    if below is not None:
        load = probe.load_per_core()
        if load is not None and load >= below:
            return f"start gate StartIfLoadBelow = {below:g}: load {load:.2f} per core"
    return None
