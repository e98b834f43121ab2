"""Helpers shared by the tests and the benchmarks: real supervisors and CLI calls (``harness``), task folders
and waits (``helpers``), the in-process loop (``loop_harness``), the dashboard (``web_support``), receivers of
notices (``receivers``), config parsing (``config_support``) and cgroup safety caps (``caps``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository: main.py, terminate.py, the examples
