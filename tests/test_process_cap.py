"""MaxProcesses, cgroups and stops that win against forking trees , with real processes.

Every dangerous task here (a fork bomb, a memory hog, a fork-and-exit chain) runs inside an outer cap that the
test creates itself first (tests/support/caps.py): a cgroup v1 pids group of 400 (memory: a memory group) holding the
supervisor that runs it, torn down in a ``finally``. The cgroup cases need root and writable cgroup v1
hierarchies (these machines and CI); elsewhere they skip. The fallback (no cgroup) is exercised by injecting an
empty cgroup layout, and RLIMIT_NPROC by running the task as the unprivileged user ``nobody``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tests.support.caps import destroy, joined, outer_cap, own_v1_group, pids_peak
from tests.support.harness import REPO, InProcessSupervisor, SupervisorProcess, cookie_processes, run_cookie
from tests.support.helpers import LAUNCHERS, use_launcher, wait_for, write_task

from supervisor.execution import _contain
from supervisor.execution.cgroup_layout import Layout, parse_layout
from supervisor.execution.cgroups import Containment, RunGroup, containment_plan, user_tasks
from supervisor.execution.outcome import ProcessReport
from supervisor.execution.runner import Runner, child_environment
from supervisor.history.store import HistoryStore
from supervisor.model import ProcessLaunch, RunMode

pytestmark = pytest.mark.timeout(180)

NOBODY = 65534

BOMB = """
import os

def main():
    open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "started"), "w").close()
    while True:  # every process forks for ever and shrugs off EAGAIN: only a kill ends this run
        try:
            os.fork()
        except OSError:
            pass
"""

# One process at a time, but never the same one: each forks its successor and exits. A kill loop that lists
# the tree and then signals what it listed chases pids that are already gone.
CHAIN = """
import os, time

def main():
    open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "started"), "w").close()
    if os.fork() == 0:
        while True:
            try:
                if os.fork():
                    os._exit(0)
            except OSError:
                pass
    time.sleep(300)  # main() itself waits: the run ends only by its timeout
"""


def config(*, every: str = "60", limits: str = "") -> str:
    text = f"[Frequency]\nEveryXMinutes = {every}\n[Global]\nRunOnStartup = True\n"
    return text + ("[Limits]\n" + textwrap.dedent(limits).strip() + "\n" if limits else "")


class CappedSupervisor(SupervisorProcess):
    """``python main.py --home HOME`` that enters the test's cap groups before it execs: race-free."""

    def __init__(self, home: Path, caps: list[Path]) -> None:
        super().__init__(home)
        self.caps = caps

    def start(self, *, wait_ready: bool = True) -> CappedSupervisor:
        enter = (
            "import os, sys\nfor f in sys.argv[1].split('\\n'):\n    open(f, 'w').write(str(os.getpid()))\n"
            "os.execv(sys.executable, [sys.executable] + sys.argv[2:])"
        )
        files = "\n".join(str(cap / "cgroup.procs") for cap in self.caps)
        with open(self.console, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", enter, files, str(REPO / "main.py"), "--home", str(self.home)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait_ready:
            wait_for(self._ready, timeout=20, what="supervisor control socket")
        return self


def finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["outcome"] not in (None, "skipped", "testing")]


def wait_finished(sup: SupervisorProcess, task: str, *, timeout: float = 60) -> dict[str, Any]:
    """The first finished run of ``task``, once there is one; its processes must all be gone by then."""
    run = wait_for(
        lambda: (finished(sup.history(task)) or [None])[-1],
        timeout=timeout,
        interval=0.1,
        what=f"a finished run of {task}\n{sup.task_log(task)[-2000:]}\n{sup.log()[-2000:]}",
    )
    assert cookie_processes(run_cookie(sup.home, run["run_id"])) == [], "processes of the run outlived it"
    return run


# ------------------------------------------------------------------------------------- cgroup v1, for real
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_fork_bomb_hits_max_processes_is_killed_and_a_canary_keeps_running(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    write_task(home / "Tasks", "bomb", main=BOMB, config=config(limits="MaxProcesses = 64\nTimeoutSeconds = 600"))
    write_task(home / "Tasks", "canary", config=config(every="0.02"))  # every 1.2 s
    with outer_cap("pids", {"pids.max": "400"}) as cap:
        with CappedSupervisor(home, [cap]) as sup:
            sup.wait_log("containment: pids: cgroup v1 pids controller; memory: cgroup v1 memory controller")
            run = wait_finished(sup, "bomb")
            beats = sup.task_log("canary").count("ok in")
            sup.wait_log("ok in", task="canary", count=beats + 2)  # the canary kept its cadence after it
            canary = finished(sup.history("canary"))
            run_groups = [p for p in cap.rglob(run["run_id"])]
        peak = pids_peak(cap)
    assert run["outcome"] == "killed", run
    assert re.fullmatch(
        r"process limit reached: \d+ fork\(s\) refused at MaxProcesses=64 \(cgroup pids "
        r"controller\); killed \d+ process\(es\)",
        run["message"],
    ), run
    assert run_groups == [], "the run's cgroup outlived the run"
    assert canary and {r["outcome"] for r in canary} == {"ok"}, canary  # no EAGAIN leaked into other tasks
    if peak is not None:  # the run's own cap held: the outer one was never reached
        assert peak < 400, peak


@pytest.mark.parametrize("mechanism", ["cgroup", "no-cgroup"])
def test_timeout_stop_wins_against_a_fork_and_exit_chain(home: Path, mechanism: str) -> None:
    """The chain's pid changes all the time: a list-then-kill loop never catches it; freezing does, and so
    do SIGSTOP passes (nothing stopped can fork)."""
    write_task(home / "Tasks", "chain", main=CHAIN, config=config(limits="TimeoutSeconds = 2\nKillGraceSeconds = 1"))
    with outer_cap("pids", {"pids.max": "400"}) as cap, joined([cap]):
        layout = None if mechanism == "cgroup" else Layout()
        with InProcessSupervisor(home, watcher_factory=None, containment=Containment(home, layout=layout)) as sup:
            with HistoryStore(sup.paths.database, readonly=True) as records:
                run = wait_for(
                    lambda: next((r for r in records.history("chain") if r.outcome), None),
                    timeout=60,
                    what=f"the chain's run to end\n{sup.log()[-2000:]}",
                )
            assert cookie_processes(run_cookie(home, run.run_id)) == []
            log = sup.log()
    assert run.outcome is not None and run.outcome.value == "timeout", run
    assert run.message is not None and run.message.startswith("timed out after 2 s"), run
    expected = "cgroup v1 freezer" if mechanism == "cgroup" else "SIGSTOP to every process"
    assert re.search(f"containment: pids: .*kill: {expected}", log), log


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_memory_limit_is_the_kernels_inside_an_outer_memory_cap(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    hog = """
        import os, time

        def main():
            out = os.environ["TASK_OUTPUT_DIR"]
            chunks = []
            for step in range(1, 33):
                chunks.append(b"\\x01" * (8 << 20))  # filled: resident at once
                with open(os.path.join(out, "allocated"), "w") as f:
                    f.write(str(step * 8))
                time.sleep(0.02)
            return "never stopped"
    """
    write_task(home / "Tasks", "hog", main=hog, config=config(limits="MemoryMB = 64"))
    with (
        outer_cap("pids", {"pids.max": "400"}) as pids,
        outer_cap("memory", {"memory.limit_in_bytes": str(1 << 30)}) as memory,
    ):
        with CappedSupervisor(home, [pids, memory]) as sup:
            run = wait_finished(sup, "hog")
            outer_peak = int((memory / "memory.max_usage_in_bytes").read_text())
    assert run["outcome"] == "memory", run
    assert re.fullmatch(
        r"memory limit exceeded: the kernel's OOM killer ended \d+ process\(es\) at MemoryMB=64 "
        r"\(cgroup v1 memory controller\)(; killed \d+ process\(es\))?",
        run["message"],
    ), run
    allocated = int((home / "Tasks" / "hog" / "Output" / "allocated").read_text())
    assert allocated <= 64, f"the hog reached {allocated} MB past its 64 MB cgroup"
    assert outer_peak < 1 << 30


def sleeper_inside(group: RunGroup) -> subprocess.Popen[bytes]:
    """A process that sleeps inside ``group`` (every hierarchy of it), once it is in."""
    plan = containment_plan(group=group, nproc=None)
    joins = [line.split(" ", 1)[1] for line in plan.splitlines() if line.startswith("join ")]
    enter = "import os, sys, time\nfor f in sys.argv[1:]:\n    open(f, 'w').write(str(os.getpid()))\ntime.sleep(300)"
    sleeper = subprocess.Popen([sys.executable, "-c", enter, *joins])
    try:
        wait_for(
            lambda: sleeper.pid in [int(p) for p in (group.pids_dir / "cgroup.procs").read_text().split()],
            what="the sleeper inside the group",
        )
    except BaseException:
        sleeper.kill()
        sleeper.wait()
        raise
    return sleeper


def test_stale_run_groups_of_this_home_are_killed_and_removed_at_start(home: Path) -> None:
    with outer_cap("pids", {"pids.max": "50"}) as cap, joined([cap]):
        first = Containment(home)
        first.start()
        group = first.create("stale-run", max_processes=10, memory_mb=None)
        assert group is not None
        sleeper = sleeper_inside(group)
        try:
            # A crashed supervisor leaves the group and its process; the next start of the same home:
            second = Containment(home)
            lines = second.start()
            assert sleeper.wait(timeout=30) == -9
            assert not any(d.exists() for d in group.dirs.values())
            assert lines == [
                "pids: cgroup v1 pids controller; memory: cgroup v1 memory controller; kill: cgroup v1 freezer"
            ]
            second.close()
            assert not any(p.exists() for p in second.parents.values())
        finally:
            sleeper.kill()
            sleeper.wait()


# ------------------------------------------------------------------------------------------ the fallback
def nobody_python() -> Path:
    """An interpreter the user nobody may run (the shim needs only the standard library); else skip."""
    for candidate in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import resource"],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                capture_output=True,
                timeout=30,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return Path(candidate)
    pytest.skip("no Python interpreter is executable by the user nobody here")


def test_without_cgroups_a_run_over_max_processes_in_threads_is_killed(home: Path) -> None:
    main = """
        import os, threading, time

        def main():
            gate = threading.Event()
            for _ in range(8):
                threading.Thread(target=gate.wait, daemon=True).start()
            open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "threads"), "w").close()
            time.sleep(300)
    """
    write_task(home / "Tasks", "threads", main=main, config=config(limits="MaxProcesses = 5"))
    with InProcessSupervisor(home, watcher_factory=None, containment=Containment(home, layout=Layout())) as sup:
        with HistoryStore(sup.paths.database, readonly=True) as records:
            run = wait_for(
                lambda: next((r for r in records.history("threads") if r.outcome), None),
                timeout=60,
                what=f"the run to end\n{sup.log()[-2000:]}",
            )
        assert cookie_processes(run_cookie(home, run.run_id)) == []
        log = sup.log()
    assert run.outcome is not None and run.outcome.value == "killed", run
    assert run.message is not None and re.match(
        r"process limit exceeded: \d+ processes and threads > "
        r"MaxProcesses=5",
        run.message,
    ), run
    assert "containment: pids: RLIMIT_NPROC" in log
    if os.geteuid() == 0:
        assert "WARNING" not in log or "the kernel ignores RLIMIT_NPROC for root" in log


def test_rlimit_nproc_caps_a_fork_bomb_of_an_unprivileged_user(tmp_path: Path) -> None:
    """The fallback as a non-root user sees it: RLIMIT_NPROC in the task process refuses the forks, and a
    kill made of SIGSTOP passes ends the bomb. Still inside an outer pids cap."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start the task as the user nobody")
    python = nobody_python()
    home = Path(tempfile.mkdtemp(prefix="ta-nproc-"))
    try:
        os.chmod(home, 0o755)
        folder = write_task(
            home / "Tasks",
            "bomb",
            main=BOMB.replace(
                "        except OSError:\n            pass",
                "        except OSError:\n            open(os.path.join(os.environ['TASK_OUTPUT_DIR'], 'capped'), 'a')"
                ".close()",
            ),
        )
        os.chmod(folder / "Output", 0o777)
        cap_n = 24
        nproc = Containment(home, layout=Layout(), uid=NOBODY).nproc_limit(cap_n, group=None)
        assert nproc is not None and nproc == user_tasks(NOBODY) + cap_n
        env = child_environment(
            os.environ,
            task="bomb",
            run_id="r1",
            task_dir=folder,
            output_dir=folder / "Output",
            env_dir=Path(sys.executable).parent.parent,
            cookie=run_cookie(home, "r1"),
        )
        env["TASKAUTOMATION_CONTAIN"] = containment_plan(group=None, nproc=nproc)
        exits: queue.Queue[ProcessReport] = queue.Queue()
        with outer_cap("pids", {"pids.max": "400"}) as cap, joined([cap]):
            runner = Runner(
                output_cap_bytes=1 << 16,
                on_output=lambda spec, line: None,
                on_exit=lambda spec, report: exits.put(report),
                popen=partial(subprocess.Popen, user=NOBODY, group=NOBODY, extra_groups=[]),
            )
            run = runner.launch(
                ProcessLaunch(
                    task="bomb", run_id="r1", mode=RunMode.MAIN, python=python, home=home, kill_grace_s=5, env=env
                )
            )
            try:
                wait_for(lambda: (folder / "Output" / "capped").exists(), timeout=60, what="a refused fork")
                during = len(cookie_processes(run_cookie(home, "r1")))
                run.stop(kill_now=True)
                report = exits.get(timeout=60)
            finally:
                run.stop(kill_now=True)
                runner.join(timeout=60)
            assert cookie_processes(run_cookie(home, "r1")) == []
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
    # The monitor (not capped: it is the task's parent) plus at most cap_n of the bomb's processes.
    print(f"RLIMIT_NPROC={nproc}: {during} processes of the run while capped")
    assert during <= cap_n + 1, during
    assert report.monitor is not None and report.monitor.stop == "kill", report


# ------------------------------------------------------------------------------------------ cgroup v2 kill
def test_v2_freeze_and_cgroup_kill_signal_a_whole_group_at_once() -> None:
    """cgroup.kill and cgroup.freeze are core cgroup v2 files (no controller needed), so the shim's v2 path runs
    for real on this machine's (controller-less) cgroup2 mount, whatever enforces the limits here."""
    own = parse_layout(
        Path("/proc/self/cgroup").read_text(),
        Path("/proc/self/mountinfo").read_text(),
        controllers_of=lambda d: {"pids", "memory"},
    ).v2
    if own is None or not os.access(own, os.W_OK):
        pytest.skip("no writable cgroup v2 hierarchy")
    group = own / f"taskautomation-test-v2-{uuid.uuid4().hex[:10]}"
    group.mkdir()
    try:
        if not (group / "cgroup.kill").exists():
            pytest.skip("kernel without cgroup.kill (before 5.14)")
        enter = "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(300)"
        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = [subprocess.Popen([sys.executable, "-c", enter, str(group / "cgroup.procs")]) for _ in range(3)]
            try:
                wait_for(
                    lambda: sorted(_contain.group_pids(str(group))) == sorted(p.pid for p in procs),
                    what="three processes in the v2 group",
                )
                hit = _contain.signal_group("v2", str(group), sig)
                assert sorted(hit) == sorted(p.pid for p in procs)
                assert [p.wait(timeout=30) for p in procs] == [-sig] * 3
                assert (group / "cgroup.freeze").read_text().strip() == "0"  # thawed again after SIGTERM
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    finally:
        destroy(group)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_monitors_of_a_sigkilled_supervisor_remove_its_run_groups(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import os, time

        def main():
            open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "started"), "w").close()
            time.sleep(300)
    """
    write_task(home / "Tasks", "sleeper", main=main, config=config(limits="KillGraceSeconds = 1"))
    parent_name = Containment(home, layout=Layout()).parent_name
    with outer_cap("pids", {"pids.max": "400"}) as cap:
        sup = CappedSupervisor(home, [cap]).start()
        try:
            wait_for(
                lambda: (home / "Tasks" / "sleeper" / "Output" / "started").exists(),
                timeout=60,
                what="the run to start",
            )
            parent = cap / parent_name
            assert [p.name for p in parent.iterdir() if p.is_dir()] != [], "the run has no cgroup"
            # Only the pids hierarchy has the test's cap; the memory parent exists though no run uses memory.
            others = [own_v1_group(name) / parent_name for name in ("freezer", "memory")]
            assert all(d.is_dir() for d in others)
            sup.kill()
            wait_for(
                lambda: not parent.exists() and not any(d.exists() for d in others),
                timeout=30,
                what="the dead supervisor's cgroups to be removed by its run's monitor",
            )
        finally:
            sup.kill()
    # (with fork, the run's server exits just after its last child: waited for, not raced)
    wait_for(lambda: cookie_processes(run_cookie(home)) == [], timeout=10, what="every process of the home gone")
