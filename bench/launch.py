"""Launch figures: decision to run -> first line of ``main()``, and trivial runs per second.

Both go through ``supervisor.execution.runner.Runner`` and the real shim in a real env built by ``EnvManager``:

* *decision -> first line*: the clock starts where the loop has decided to run (before the run id, the
  child environment and the ProcessLaunch are built) and stops at the ``time.monotonic_ns()`` that the first
  line of the task's ``main()`` writes. Baseline: ``ENV/bin/python -c pass``, spawn to exit, interleaved.
* *runs per second*: trivial runs (``main()`` returns at once) launched from one thread, with a fixed
  number in flight, until all have ended (the monitor exited and its report was read).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .common import BenchRunner, Settings, now_ns, ready_env, temp_home, write_task
from .stats import Figure, interleave, ratio_of, summarize

GROUP = "launch"

FIRST_LINE_MAIN = """\
import os
import time


def main():
    os.write(1, b"%d\\n" % time.monotonic_ns())
"""

TRIVIAL_MAIN = "def main():\n    return None\n"


def decision_to_first_line(python: Path, home: Path, *, runs: int) -> tuple[list[float], list[float]]:
    """(ours, baseline) in ms, ``runs`` interleaved samples each."""
    write_task(home / "Tasks", "first_line", main=FIRST_LINE_MAIN, initialize=None)
    bench = BenchRunner(home, python)

    def ours() -> float:
        start = now_ns()
        spec = bench.spec("first_line")
        bench.launch(spec)
        line = bench.wait_lines(spec.run_id, 1)[0]
        bench.wait_exit(spec.run_id)
        return (int(line) - start) / 1e6

    def floor() -> float:
        start = now_ns()
        subprocess.run([str(python), "-c", "pass"], stdin=subprocess.DEVNULL, check=True)
        return (now_ns() - start) / 1e6

    try:
        ours(), floor()  # warm-up: page cache, the task's __pycache__
        ours_ms, floor_ms = interleave(runs, ours, floor)
        return ours_ms, floor_ms
    finally:
        bench.close()


def runs_per_second(python: Path, home: Path, *, total: int, in_flight: int) -> float:
    """Trivial runs completed per second with ``in_flight`` runs kept going at once."""
    write_task(home / "Tasks", "trivial", main=TRIVIAL_MAIN, initialize=None)
    bench = BenchRunner(home, python)
    try:
        launched: list[str] = []
        start = now_ns()
        while len(launched) < total:
            done = len(bench.exited)
            if len(launched) - done >= in_flight:
                bench.wait(lambda: len(bench.exited) > done, timeout=60, what="a trivial run to end")
                continue
            spec = bench.spec("trivial")
            bench.launch(spec)
            launched.append(spec.run_id)
        bench.wait(lambda: len(bench.exited) >= total, timeout=120, what="all trivial runs to end")
        elapsed = (max(ns for ns, _ in bench.exited.values()) - start) / 1e9
        failed = [r for _, r in bench.exited.values() if not (r.task and r.task.status == "ok")]
        if failed:
            raise AssertionError(f"{len(failed)} trivial run(s) did not report ok, e.g. {failed[0]}")
        return total / elapsed
    finally:
        bench.close()


def run(settings: Settings) -> list[Figure]:
    figures: list[Figure] = []
    with temp_home("launch", settings) as home:
        python = ready_env(home)
        ours_ms, floor_ms = decision_to_first_line(python, home, runs=int(settings.pick(15, 40)))
        ours, floor = summarize(ours_ms), summarize(floor_ms)
        ratio = ratio_of(ours, floor)
        figures.append(
            Figure(
                GROUP,
                "decision to run → first line of main()",
                "ms",
                ours,
                "≤ 1.5×",
                ratio is not None and ratio <= 1.5,
                baseline=floor,
                baseline_name="ENV/bin/python -c pass",
                ratio=ratio,
                note="Runner.launch + shim + fork + import of the task, in a uv-built env; the "
                "baseline is spawn to exit of the same interpreter, interleaved A/B",
            )
        )
        rates = [
            runs_per_second(python, home, total=int(settings.pick(150, 400)), in_flight=8)
            for _ in range(int(settings.pick(2, 3)))
        ]
        rate = summarize(rates)
        figures.append(
            Figure(
                GROUP,
                "trivial runs per second, 2 cores",
                "/s",
                rate,
                "≥ 100 /s",
                rate.median >= 100,
                note="8 runs in flight, launched from one thread; a run counts when its monitor has exited "
                "and its report was read",
            )
        )
    return figures
