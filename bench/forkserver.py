"""Fork-server figures (``[Supervisor] Launcher = fork``): decision -> first line of ``main()``, fork vs spawn.

Measured in one invocation, interleaved, in one real env: the same ``Runner`` and shim with the spawn path and
with a ``ForkPool`` (supervisor/execution/forkserver.py), against two floors: ``ENV/bin/python -c pass``
(spawn to exit: the spawn design's floor) and *fork + exit of a pre-started interpreter* of the same env
(a warm process forks a child that exits at once and reaps it: this design's floor). Then trivial runs per
second with each launcher.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any, Callable

from supervisor.execution.forkserver import ForkPool

from .common import BenchRunner, Settings, now_ns, ready_env, temp_home, write_task
from .launch import FIRST_LINE_MAIN, TRIVIAL_MAIN
from .stats import Figure, Summary, interleave, ratio_of, summarize

GROUP = "forkserver"

# A warm interpreter of the env that forks a child per byte read; the child exits at once, the parent reaps
# it and answers: the cost of fork + exit + reap, nothing of the run's own set-up.
FORK_FLOOR = (
    "import os, sys\n"
    "while os.read(0, 1):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        os._exit(0)\n"
    "    os.waitpid(pid, 0)\n"
    "    os.write(1, b'.')\n"
)


def _first_line(bench: BenchRunner) -> Callable[[], float]:
    def sample() -> float:
        start = now_ns()
        spec = bench.spec("first_line")
        bench.launch(spec)
        line = bench.wait_lines(spec.run_id, 1)[0]
        bench.wait_exit(spec.run_id)
        return (int(line) - start) / 1e6

    return sample


def first_line_figures(python: Path, home: Path, *, runs: int) -> dict[str, list[float]]:
    """ms samples, interleaved: fork, spawn, ``python -c pass`` and the fork + exit floor."""
    write_task(home / "Tasks", "first_line", main=FIRST_LINE_MAIN, initialize=None)
    pool = ForkPool(cookie_prefix="bench/", logger=logging.getLogger("bench.forkserver"))
    forked = BenchRunner(home, python, popen=pool.popen)
    spawned = BenchRunner(home, python)
    warm = subprocess.Popen([str(python), "-c", FORK_FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert warm.stdin is not None and warm.stdout is not None
    stdin, stdout = warm.stdin, warm.stdout

    def spawn_floor() -> float:
        start = now_ns()
        subprocess.run([str(python), "-c", "pass"], stdin=subprocess.DEVNULL, check=True)
        return (now_ns() - start) / 1e6

    def fork_floor() -> float:
        start = now_ns()
        stdin.write(b"x")
        stdout.read(1)
        return (now_ns() - start) / 1e6

    samplers = (_first_line(forked), _first_line(spawned), spawn_floor, fork_floor)
    try:
        for sampler in samplers:  # warm-up: the server's start, page cache, the task's __pycache__
            sampler()
        results = interleave(runs, *samplers)
        if pool.spawned:
            raise AssertionError(f"{pool.spawned} run(s) fell back to spawn: the fork figure would be mixed")
        return dict(zip(("fork", "spawn", "python -c pass", "fork + exit"), results))
    finally:
        forked.close()
        spawned.close()
        pool.close()
        stdin.close()
        warm.wait(timeout=10)


def runs_per_second(python: Path, home: Path, *, total: int, in_flight: int, popen: Any) -> float:
    write_task(home / "Tasks", "trivial", main=TRIVIAL_MAIN, initialize=None)
    bench = BenchRunner(home, python, popen=popen)
    try:
        launched = 0
        start = now_ns()
        while launched < total:
            done = len(bench.exited)
            if launched - done >= in_flight:
                bench.wait(lambda done=done: len(bench.exited) > done, timeout=60, what="a trivial run to end")
                continue
            bench.launch(bench.spec("trivial"))
            launched += 1
        bench.wait(lambda: len(bench.exited) >= total, timeout=120, what="all trivial runs to end")
        elapsed = (max(ns for ns, _ in bench.exited.values()) - start) / 1e9
        failed = [r for _, r in bench.exited.values() if not (r.task and r.task.status == "ok")]
        if failed:
            raise AssertionError(f"{len(failed)} trivial run(s) did not report ok, e.g. {failed[0]}")
        return total / elapsed
    finally:
        bench.close()


def _row(
    name: str, ours: Summary, floor: Summary, floor_name: str, goal: str, limit: float | None, note: str
) -> Figure:
    ratio = ratio_of(ours, floor)
    passed = None if limit is None else ratio is not None and ratio <= limit
    return Figure(
        GROUP, name, "ms", ours, goal, passed, baseline=floor, baseline_name=floor_name, ratio=ratio, note=note
    )


def run(settings: Settings) -> list[Figure]:
    figures: list[Figure] = []
    with temp_home("forkserver", settings) as home:
        python = ready_env(home)
        samples = first_line_figures(python, home, runs=int(settings.pick(15, 40)))
        fork, spawn = summarize(samples["fork"]), summarize(samples["spawn"])
        floor, fork_floor = summarize(samples["python -c pass"]), summarize(samples["fork + exit"])
        figures += [
            _row(
                "decision → first line of main(), Launcher = fork",
                fork,
                floor,
                "ENV/bin/python -c pass",
                "≤ 0.5× (issue 21)",
                0.5,
                "Runner.launch through the env's fork server; interleaved with the rows below",
            ),
            _row(
                "decision → first line of main(), Launcher = spawn",
                spawn,
                floor,
                "ENV/bin/python -c pass",
                "≤ 1.5×",
                1.5,
                "today's path, same invocation",
            ),
            _row(
                "decision → first line of main(), fork vs its floor",
                fork,
                fork_floor,
                "fork + exit of a pre-started interpreter",
                "—",
                None,
                "what the run still costs above a bare fork: the shim's set-up, its second fork, the task import",
            ),
        ]
        rates: dict[str, Summary] = {}
        pool = ForkPool(cookie_prefix="bench/", logger=logging.getLogger("bench.forkserver"))
        try:
            for name, popen in (("fork", pool.popen), ("spawn", None)):
                rates[name] = summarize(
                    [
                        runs_per_second(python, home, total=int(settings.pick(150, 400)), in_flight=8, popen=popen)
                        for _ in range(int(settings.pick(2, 3)))
                    ]
                )
        finally:
            pool.close()
        figures.append(
            Figure(
                GROUP,
                "trivial runs per second, Launcher = fork",
                "/s",
                rates["fork"],
                "≥ 300 /s (issue 21)",
                rates["fork"].median >= 300,
                baseline=rates["spawn"],
                baseline_name="Launcher = spawn",
                ratio=rates["fork"].median / rates["spawn"].median if rates["spawn"].median else None,
                note="8 in flight from one thread, as the launch group; no cgroups, no secrets (Runner only)",
            )
        )
    return figures
