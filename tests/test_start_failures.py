"""A run or an initialize() that cannot start for lack of processes or threads is retried, never a failure; a
process-cap kill names the cap that refused; a clean stop removes the home's cgroups whatever happened.

Real supervisors, real shims, real pids cgroups. Every squeeze happens inside cgroup v1 pids groups the test
creates itself (tests/support/caps.py): an outer cap of 400 around the supervisor, and for the shim's own
``fork()`` a tight group of one process below it that only the shim joins (through a wrapper in front of the
env's interpreter: the supervisor's own forks stay free). Needs root and writable cgroup v1 hierarchies (these
machines and CI); elsewhere the tests skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from supervisor.execution.cgroup_layout import Layout
from supervisor.execution.cgroups import Containment
from supervisor.history.store import HistoryStore
from supervisor.paths import Paths
from tests.support.caps import joined, outer_cap, own_v1_group
from tests.support.harness import REPO, cookie_processes, run_cookie
from tests.support.helpers import use_launcher, wait_for, write_task
from tests.test_process_cap import BOMB, CappedSupervisor, finished, sleeper_inside, wait_finished

pytestmark = pytest.mark.timeout(240)

GATED_INIT = """
import os, time

def initialize():
    # Held until the test has put its wrapper in front of the env's interpreter (the env exists by now).
    gate = os.path.join(os.environ["TASK_OUTPUT_DIR"], "go")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return "ready"
"""


def config(*, every: str = "60", startup: bool = False) -> str:
    return f"[Frequency]\nEveryXMinutes = {every}\n[Global]\nRunOnStartup = {startup}\n"


def wrap_interpreter(home: Path, *, mode: str, tight: Path) -> None:
    """Put a wrapper in front of the (one) env's ``bin/python``: a shim started for ``mode`` first joins the
    ``tight`` group, where its own fork() is refused while that group's pids.max is 1."""
    (python,) = (home / "envs").glob("*/bin/python")
    real = python.with_name("python-real")
    python.rename(real)  # the symlink to the base interpreter, still inside bin/ (next to pyvenv.cfg's bin)
    # Builtins only (echo, test, exec): the shell itself must not fork once it is in the tight group.
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$3" = "{mode}" ]; then echo $$ > {tight}/cgroup.procs; fi\n'  # argv: -u SHIM MODE ...
        f'exec {real} "$@"\n'
    )
    python.chmod(0o755)


def tight_group(cap: Path) -> Path:
    """A group of one process below the test's cap (pids.max = 1: whoever joins it cannot fork)."""
    tight = cap / "tight"
    tight.mkdir()
    (tight / "pids.max").write_text("1")
    return tight


def rows(home: Path, task: str) -> list[Any]:
    with HistoryStore(Paths(home).database, readonly=True) as records:
        return list(records.history(task))


def assert_no_failure_rows(home: Path, task: str) -> None:
    outcomes = [r.outcome.value if r.outcome else None for r in rows(home, task)]
    assert not {"crashed", "failed"} & set(outcomes), outcomes


def home_groups(home: Path, cap: Path) -> list[Path]:
    """The home's parent groups that exist now, in every v1 hierarchy the supervisor uses."""
    name = Containment(home, layout=Layout()).parent_name
    candidates = [cap / name] + [own_v1_group(c) / name for c in ("freezer", "memory")]
    return [p for p in candidates if p.exists()]


# ---------------------------------------------------------------------------------- the shim's fork(): EAGAIN
def test_eagain_in_the_shims_fork_is_retried_as_queued_and_ends_ok_once_the_cap_is_lifted(home: Path) -> None:
    # The wrapped interpreter is what puts the shim into the tight group: a spawned one (a fork server was
    # started before the wrapper and would fork past it).
    use_launcher(home, "spawn")
    write_task(home / "Tasks", "t", config=config(), initialize=GATED_INIT)
    with outer_cap("pids", {"pids.max": "400"}) as cap:
        tight = tight_group(cap)
        with CappedSupervisor(home, [cap]) as sup:
            sup.wait_log("[init ", task="t")  # the env is built: initialize() is running
            wrap_interpreter(home, mode="main", tight=tight)
            (home / "Tasks" / "t" / "Output" / "go").write_text("")
            sup.wait_log("could not start: the shim could not fork the task process: [Errno 11]", count=2)
            state = sup.task_status("t")
            assert state["state"] == "queued", state
            assert state["consecutive_failures"] == 0, state
            assert finished(sup.history("t")) == [], "a start failure was recorded as a run"
            (tight / "pids.max").write_text("max")
            run = wait_finished(sup, "t")
            state = sup.task_status("t")
    assert run["outcome"] == "ok", run
    assert state["consecutive_failures"] == 0 and state["state"] == "scheduled", state
    assert_no_failure_rows(home, "t")
    retries = re.findall(
        rf"run {run['run_id']} could not start: .*; a transient failure: trying again in (\d+) s", sup.log()
    )
    assert len(retries) >= 2 and float(retries[1]) > float(retries[0]), retries  # 2 s, doubling
    assert "Traceback" not in sup.task_log("t"), sup.task_log("t")


def test_eagain_in_the_shims_fork_for_initialize_is_retried_and_the_task_loads(home: Path) -> None:
    # The wrapped interpreter is what puts the shim into the tight group: a spawned one (a fork server was
    # started before the wrapper and would fork past it).
    use_launcher(home, "spawn")
    write_task(home / "Tasks", "first", config=config(), initialize=GATED_INIT)
    with outer_cap("pids", {"pids.max": "400"}) as cap:
        tight = tight_group(cap)
        with CappedSupervisor(home, [cap]) as sup:
            sup.wait_log("[init ", task="first")
            wrap_interpreter(home, mode="initialize", tight=tight)
            (home / "Tasks" / "first" / "Output" / "go").write_text("")
            wait_finished(sup, "first")
            # A second task with the same (empty) requirements shares the env: its initialize() goes through
            # the wrapper at once.
            write_task(home / "Tasks", "second", config=config(startup=True))
            sup.wait_log("task 'second': initialize(): the shim could not fork the task process: [Errno 11]", count=2)
            assert sup.task_status("second")["state"] == "initializing"
            (tight / "pids.max").write_text("max")
            sup.wait_log("task 'second': initialize(): ready")
            run = wait_finished(sup, "second")
            state = sup.task_status("second")
    assert run["outcome"] == "ok", run
    assert state["consecutive_failures"] == 0 and state["error"] is None, state
    assert "a transient failure: trying again in" in sup.log()


# ------------------------------------------------------------------------ the supervisor's own thread starts
def test_a_refused_relay_thread_is_retried_and_a_clean_stop_removes_the_home_cgroups(home: Path) -> None:
    """pids.max below what the supervisor holds: no thread, no fork. The run backs off; once the cap is
    lifted it runs; the stop is clean and leaves none of the home's groups (it used to leave them all)."""
    write_task(home / "Tasks", "t", config=config(every="0.05"))  # every 3 s
    with outer_cap("pids", {"pids.max": "400"}) as cap:
        sup = CappedSupervisor(home, [cap]).start()
        try:
            sup.wait_log("ok in", task="t")
            assert home_groups(home, cap) != [], "the supervisor made no groups for its home"
            (cap / "pids.max").write_text("1")  # squeezed: (the control socket cannot answer either)
            sup.wait_log("cannot start a thread to relay the run's output: can't start new thread", count=2)
            (cap / "pids.max").write_text("400")
            before = len(finished(sup.history("t")))
            wait_for(
                lambda: len(finished(sup.history("t"))) > before,
                timeout=60,
                what=f"a run after the squeeze\n{sup.log()}",
            )
            state = sup.task_status("t")
            assert sup.stop() == 0, sup.console_text()
        finally:
            sup.kill()
        left = home_groups(home, cap)
    assert state["consecutive_failures"] == 0, state
    assert_no_failure_rows(home, "t")
    assert "Traceback" not in sup.console_text(), sup.console_text()
    assert left == [], left


def test_a_clean_stop_removes_a_run_group_left_behind_and_the_home_groups(home: Path) -> None:
    """A run group whose removal failed at the run's end (a process still in it) must not keep the home's
    parent groups alive at stop: closing kills what is left and removes it all."""
    with outer_cap("pids", {"pids.max": "50"}) as cap, joined([cap]):
        containment = Containment(home)
        containment.start()
        group = containment.create("left-behind", max_processes=10, memory_mb=None)
        assert group is not None
        sleeper = sleeper_inside(group)
        try:
            containment.close()
            assert sleeper.wait(timeout=30) == -9
        finally:
            sleeper.kill()
            sleeper.wait()
        assert not any(d.exists() for d in group.dirs.values())
        assert not any(p.exists() for p in containment.parents.values())


# ---------------------------------------------------------------------------------- which cap refused a fork
def test_a_fork_bomb_stopped_by_an_outer_cap_is_killed_naming_that_cap(home: Path) -> None:
    write_task(
        home / "Tasks",
        "bomb",
        main=BOMB,
        config=config(startup=True) + textwrap.dedent("[Limits]\nTimeoutSeconds = 600\n"),  # MaxProcesses 1024
    )
    with outer_cap("pids", {"pids.max": "400"}) as cap, CappedSupervisor(home, [cap]) as sup:
        run = wait_finished(sup, "bomb", timeout=90)
    assert run["outcome"] == "killed", run
    assert re.fullmatch(
        rf"process limit reached: \d+ fork\(s\) refused at pids\.max=400 of the outer cgroup {re.escape(str(cap))} "
        r"\(cgroup pids controller; the run's MaxProcesses=1024 was not reached\); killed \d+ process\(es\)",
        run["message"],
    ), run
    assert cookie_processes(run_cookie(home, run["run_id"])) == []
    assert os.geteuid() == 0  # (outer_cap skips otherwise)


def test_a_process_scan_without_threads_reads_inline(home: Path) -> None:
    """The cookie sweep (stop, close, a monitor that died) must work exactly when no thread can start."""
    marker = f"TASKAUTOMATION_TEST_SCAN={home.name}"
    probe = (
        "import os, sys\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"  # alone in a group of pids.max 1: no thread, no fork
        "import threading\n"
        "try:\n    threading.Thread(target=print).start()\nexcept RuntimeError as exc:\n    print('refused:', exc)\n"
        "from supervisor.execution.procscan import find_by_environ\n"
        "print('found', *find_by_environ(sys.argv[2].encode()).matches)\n"
    )
    with outer_cap("pids", {"pids.max": "400"}) as cap:
        tight = tight_group(cap)
        target = subprocess.Popen(["sleep", "300"], env={**os.environ, marker.split("=")[0]: home.name})
        try:
            out = subprocess.run(
                [sys.executable, "-c", probe, str(tight / "cgroup.procs"), marker],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            target.kill()
            target.wait()
    assert "refused: can't start new thread" in out.stdout, out.stdout + out.stderr
    assert f"found {target.pid}" in out.stdout, out.stdout + out.stderr
