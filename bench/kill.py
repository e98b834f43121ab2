"""Stop figures: how fast a run's whole tree is gone once the supervisor wants it gone.

All of them start real trees: the task's ``main()`` starts N-1 ``sleep`` children, prints every pid of its
tree, then sleeps. "Gone" for ours means the run's monitor has reaped every process of the tree, exited, and
the supervisor's relay thread has read its report (``Runner``'s ``on_exit``) — strictly more than "dead".

* *stop a tree of 6 that obeys SIGTERM*: ``RunProcess.stop()`` (what the loop calls on a timeout, a limit,
  shutdown) vs ``os.killpg(SIGTERM)`` on a session of the same shape, polled until all 6 are dead;
  interleaved A/B.
* *stop a tree that ignores SIGTERM*: the same with every process ignoring SIGTERM: the floor is the grace
  period; the overhead on top of it is the figure.
* *timeout fired -> tree of N gone* (N = 1, 10, 100), with the default grace (the tree obeys SIGTERM).
* *SIGKILL of the supervisor -> last task process gone*: a real supervisor (``main.py``) runs the task; the
  bench SIGKILLs it and polls until the monitor and the whole tree are dead. The monitor notices through its
  control pipe's EOF and PDEATHSIG, and uses the orphan grace (min(KillGraceSeconds, 2 s)).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.harness import SupervisorProcess  # main.py --home HOME, as a user starts it

from supervisor.execution import _shim
from supervisor.model import Limits

from .common import BenchRunner, Settings, kill_quietly, now_ns, pids_alive, ready_env, temp_home, wait_for, write_task
from .stats import Figure, interleave, ratio_of, summarize

GROUP = "kill"

# The tree: main() plus N-1 sleeps; optionally every process ignores SIGTERM (inherited through fork/exec).
TREE_SOURCE = """\
import os, signal, subprocess, sys, time

def build(size, ignore_term):
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = [subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL) for _ in range(size - 1)]
    return [os.getpid()] + [c.pid for c in children]
"""

TREE_MAIN = """\
import os, sys, time
from Tasks.{name}.tree import build

def main():
    pids = build({size}, {ignore})
    sys.stdout.write("pids " + " ".join(map(str, pids)) + "\\n")
    sys.stdout.flush()
    time.sleep(1000)
"""

BASELINE_SCRIPT = (
    TREE_SOURCE
    + """
pids = build(int(sys.argv[1]), sys.argv[2] == "1")
sys.stdout.write(" ".join(map(str, pids)) + "\\n")
sys.stdout.flush()
time.sleep(1000)
"""
)


def _write_tree_task(home: Path, name: str, size: int, ignore_term: bool) -> None:
    write_task(
        home / "Tasks",
        name,
        main=TREE_MAIN.format(name=name, size=size, ignore=ignore_term),
        initialize=None,
        extra={"tree.py": TREE_SOURCE},
    )


def _wait_gone(pids: list[int], timeout: float = 30.0) -> int:
    """Poll (tightly) until none of ``pids`` is alive; the ns when that was first seen."""
    deadline = time.monotonic() + timeout
    while pids_alive(pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes still alive after {timeout:g} s: {pids_alive(pids)}")
        time.sleep(0.0002)
    return now_ns()


class TreeStops:
    """Start trees through the Runner (ours) or as a bare session (baseline) and time their stop."""

    def __init__(self, home: Path, python: Path) -> None:
        self.home = home
        self.python = python
        self.bench = BenchRunner(home, python)
        self.script = home / "baseline_tree.py"
        self.script.write_text(BASELINE_SCRIPT)

    def ours(self, size: int, *, ignore_term: bool, grace_s: float) -> float:
        """ms from ``stop()`` to the run's ``on_exit``; checks that no process of the tree survived."""
        name = f"tree{size}{'i' if ignore_term else ''}"
        if not (self.home / "Tasks" / name).exists():
            _write_tree_task(self.home, name, size, ignore_term)
        spec = self.bench.spec(name, grace_s=grace_s)
        run = self.bench.launch(spec)
        line = self.bench.wait_lines(spec.run_id, 1)[0]
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == size, line
        start = now_ns()
        run.stop()
        end, report = self.bench.wait_exit(spec.run_id, timeout=grace_s + 30)
        survivors = pids_alive(pids)
        if survivors:
            for pid in survivors:
                kill_quietly(pid)
            raise AssertionError(f"run {spec.run_id}: {len(survivors)} process(es) outlived the stop")
        return (end - start) / 1e6

    def baseline(self, size: int, *, ignore_term: bool = False) -> float:
        """ms from ``killpg(SIGTERM)`` on a session of the same shape until all of it is dead."""
        proc = subprocess.Popen(
            [str(self.python), str(self.script), str(size), "1" if ignore_term else "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            cwd=self.home,
        )
        try:
            assert proc.stdout is not None
            pids = [int(p) for p in proc.stdout.readline().split()]
            start = now_ns()
            os.killpg(proc.pid, signal.SIGTERM)
            end = _wait_gone(pids)
            return (end - start) / 1e6
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def close(self) -> None:
        self.bench.close()


SUPERVISED_MAIN = """\
import os, sys, time
from Tasks.{name}.tree import build

def main():
    pids = build({size}, {ignore})
    out = os.path.join(os.environ["TASK_OUTPUT_DIR"], "pids.txt")
    with open(out + ".tmp", "w") as f:
        f.write(" ".join(map(str, [os.getppid()] + pids)))
    os.replace(out + ".tmp", out)
    time.sleep(1000)
"""


def supervisor_sigkill(home: Path, *, ignore_term: bool, reps: int) -> list[float]:
    """ms from SIGKILL of a real supervisor until its run's monitor and whole tree are dead."""
    name = "orphaned_ignoring" if ignore_term else "orphaned"
    folder = write_task(
        home / "Tasks",
        name,
        main=SUPERVISED_MAIN.format(name=name, size=6, ignore=ignore_term),
        initialize=None,
        extra={"tree.py": TREE_SOURCE},
        config="[Frequency]\nEveryXMinutes = 1440\n[Global]\nRunOnStartup = True\n",
    )
    pids_file = folder / "Output" / "pids.txt"
    samples: list[float] = []
    for _ in range(reps):
        pids_file.unlink(missing_ok=True)
        sup = SupervisorProcess(home).start()
        pids: list[int] = []
        try:
            wait_for(pids_file.exists, timeout=60, what=f"{name} to start its tree")
            pids = [int(p) for p in pids_file.read_text().split()]
            assert sup.proc is not None
            start = now_ns()
            sup.proc.send_signal(signal.SIGKILL)
            end = _wait_gone(pids, timeout=30)
            samples.append((end - start) / 1e6)
        finally:
            sup.kill()
            for pid in pids_alive(pids):
                kill_quietly(pid)
    return samples


def run(settings: Settings) -> list[Figure]:
    figures: list[Figure] = []
    default_grace = Limits().kill_grace_s
    with temp_home("kill", settings) as home:
        python = ready_env(home)
        stops = TreeStops(home, python)
        try:
            stops.ours(6, ignore_term=False, grace_s=default_grace), stops.baseline(6)  # warm-up
            ours_ms, floor_ms = interleave(
                int(settings.pick(8, 25)),
                lambda: stops.ours(6, ignore_term=False, grace_s=default_grace),
                lambda: stops.baseline(6),
            )
            ours, floor = summarize(ours_ms), summarize(floor_ms)
            ratio = ratio_of(ours, floor)
            figures.append(
                Figure(
                    GROUP,
                    "stop a run's tree of 6 that obeys SIGTERM",
                    "ms",
                    ours,
                    "≤ 3× (about 10 ms)",
                    ratio is not None and ratio <= 3.0,
                    baseline=floor,
                    baseline_name="os.killpg on a session",
                    ratio=ratio,
                    note="ours ends when the monitor has reaped all 6, exited and its report was read; the "
                    "baseline when all 6 are dead (zombies count), polled every 0.2 ms",
                )
            )

            grace = float(settings.pick(0.3, 1.0))
            ignoring = [stops.ours(6, ignore_term=True, grace_s=grace) for _ in range(int(settings.pick(3, 8)))]
            ours = summarize(ignoring)
            overhead = summarize([v - grace * 1000 for v in ignoring])
            grace_summary = summarize([grace * 1000])
            figures.append(
                Figure(
                    GROUP,
                    "stop a tree of 6 that ignores SIGTERM",
                    "ms",
                    ours,
                    "grace + ≤ 20 ms",
                    overhead.median <= 20.0,
                    baseline=grace_summary,
                    baseline_name="grace period",
                    ratio=ratio_of(ours, grace_summary),
                    note=f"overhead past the grace: {overhead.show('ms')}",
                )
            )

            for size in (1, 10, 100):
                reps = int(settings.pick(3 if size == 100 else 5, 10))
                samples = [stops.ours(size, ignore_term=False, grace_s=default_grace) for _ in range(reps)]
                figures.append(
                    Figure(
                        GROUP,
                        f"timeout fired → tree of {size} gone",
                        "ms",
                        summarize(samples),
                        "(report only)",
                        None,
                        baseline_name=f"grace {default_grace:g} s, not reached (tree obeys SIGTERM)",
                        note="from RunProcess.stop(), which is all the loop's timeout enforcement does, to the "
                        "run's exit report"
                        if size == 1
                        else "",
                    )
                )
        finally:
            stops.close()

        orphan_grace = min(default_grace, _shim.ORPHAN_GRACE_S)
        for ignore_term in (False, True):
            reps = int(settings.pick(2, 5)) if not ignore_term else int(settings.pick(1, 3))
            samples = supervisor_sigkill(home, ignore_term=ignore_term, reps=reps)
            what = "ignores" if ignore_term else "obeys"
            figures.append(
                Figure(
                    GROUP,
                    f"SIGKILL of the supervisor → last task process gone (tree {what} SIGTERM)",
                    "ms",
                    summarize(samples),
                    "within a few seconds",
                    max(samples) <= 5000.0,
                    baseline_name=f"orphan grace {orphan_grace:g} s",
                    note="monitor + 6-process tree of a run started by a real supervisor; the monitor sees its "
                    "control pipe close (and PDEATHSIG), SIGTERMs the tree, SIGKILLs after the orphan grace"
                    if not ignore_term
                    else "",
                )
            )
    return figures
