"""Containment, proved with real processes.

Each case runs a hostile or careless task under a real supervisor (or, where that is simpler, a bare Runner),
then checks three things: the recorded outcome and message in history, the line in the log, and that no
process of the run is alive any more. "Alive" is decided by scanning /proc for the run's cookie
(``TASKAUTOMATION_RUN_COOKIE=<home hash>/<run id>``), which every process of a run inherits, escapees
included, so a process that slipped out of the tree cannot slip out of the check.

Readiness is always a file the task writes in its Output/ folder (pids after spawning children), never a
sleep. Margins on memory and file counts are generous because other suites may load the 2 cores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.support.harness import SupervisorProcess, cli, cookie_processes, pids_alive, run_cookie
from tests.support.helpers import LAUNCHERS, use_launcher, wait_for, write_task

pytestmark = pytest.mark.timeout(120)

EVERY_SECOND = "0.02"  # EveryXMinutes: 1.2 s

# Shared by the tasks below (pasted into their main.py): start a daemon that escapes by setsid() + double
# fork, ignores SIGTERM, and reports its pid; returns once the daemon exists.
SPAWN_DAEMON = """
import os, signal, time

def spawn_daemon(out):
    final = os.path.join(out, "daemon")
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # kept across exec: only SIGKILL ends it
            with open(final + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(final + ".tmp", final)
            os.execvp("sleep", ["sleep", "300"])
        os._exit(0)
    os.waitpid(pid, 0)  # the middle process is gone: the daemon is nobody's child in this task any more
    deadline = time.monotonic() + 30
    while not os.path.exists(final):
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start")
        time.sleep(0.01)
    return int(open(final).read())
"""


def task_config(*, every: str = "60", startup: bool = True, limits: str = "", window: str = "") -> str:
    text = f"[Frequency]\nEveryXMinutes = {every}\n{window}"
    if startup:
        text += "[Global]\nRunOnStartup = True\n"
    if limits:
        text += "[Limits]\n" + textwrap.dedent(limits).strip() + "\n"
    return text


def outdir(home: Path, task: str) -> Path:
    return home / "Tasks" / task / "Output"


def read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def wait_file(path: Path, *, lines: int = 1, timeout: float = 30) -> Path:
    """Wait until the task wrote ``lines`` complete lines (or, for lines=1, any content) to ``path``."""

    def ready() -> bool:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return False
        return text.count("\n") >= lines if lines > 1 else bool(text.strip())

    wait_for(ready, timeout=timeout, what=f"{path.name} written by the task")
    return path


def finished_run(
    sup: SupervisorProcess, task: str, *, outcome: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    """The newest finished main() run of ``task`` (waiting for one with ``outcome`` if given), after
    asserting that no process of that run is alive.

    The check happens here, while the supervisor still runs, because its shutdown sweeps every cookie of
    its home: a leak checked only after the ``with`` block would be hidden by that last-resort sweep.
    """

    def newest() -> dict[str, Any] | None:
        for run in sup.history(task):
            if run["outcome"] not in (None, "skipped", "testing"):
                return run if outcome is None or run["outcome"] == outcome else None
        return None

    run = wait_for(
        newest,
        timeout=timeout,
        interval=0.2,
        what=f"a finished run of {task} (outcome {outcome})\n{sup.task_log(task)[-3000:]}",
    )
    assert_run_gone(sup.home, run["run_id"])
    return run


def assert_run_gone(home: Path, run_id: str) -> None:
    """No process carrying the run's cookie is alive. Checked at once, not waited for: the monitor reports
    a run's end only after its whole tree is gone, so anything still alive here is a leak."""
    assert cookie_processes(run_cookie(home, run_id)) == [], f"processes of run {run_id} outlived it"


def supervisor_zombies(sup: SupervisorProcess) -> list[int]:
    assert sup.proc is not None
    return [c.pid for c in psutil.Process(sup.proc.pid).children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE]


def is_zombie_or_gone(pid: int) -> str:
    """'gone', 'zombie' or 'alive' for ``pid``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return "zombie" if stat[stat.rfind(b")") + 2 :][:1] == b"Z" else "alive"


# ---------------------------------------------------------------------------------------------- 1. timeout
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_timeout_kills_grandchildren_that_ignore_sigterm(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import os, signal, subprocess, time

        def main():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            out = os.environ["TASK_OUTPUT_DIR"]
            for _ in range(2):
                # sh and both sleeps inherit the ignored SIGTERM: only SIGKILL after the grace ends them.
                subprocess.Popen(["sh", "-c", 'trap "" TERM; sleep 300 & sleep 300 & echo $$ >> "$1/ready"; wait',
                                  "sh", out])
            time.sleep(300)
    """
    write_task(
        home / "Tasks", "stubborn", main=main, config=task_config(limits="TimeoutSeconds = 2\nKillGraceSeconds = 1")
    )
    with SupervisorProcess(home) as sup:
        wait_file(outdir(home, "stubborn") / "ready", lines=2)
        run = finished_run(sup, "stubborn")
        log = sup.wait_log("timeout in", task="stubborn")
    # main() + 2 shells + 4 sleeps: every one of them ignored SIGTERM and was SIGKILLed after the grace.
    expected = "timed out after 2 s (TimeoutSeconds=2); killed 7 process(es)"
    assert run["outcome"] == "timeout", run
    assert run["message"] == expected
    assert re.search(r"WARNING .*\[run %s\] timeout in [\d.]+ s: %s" % (run["run_id"], re.escape(expected)), log)


# ------------------------------------------------------------------------------------ 2. escaped daemon
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_escaped_daemon_is_killed_when_main_returns(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = (
        SPAWN_DAEMON
        + """
def main():
    pid = spawn_daemon(os.environ["TASK_OUTPUT_DIR"])
    return f"daemon {pid} started"
"""
    )
    write_task(home / "Tasks", "daemonizer", main=main, config=task_config(limits="KillGraceSeconds = 1"))
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "daemonizer")
        log = sup.wait_log("ok in", task="daemonizer")
        daemon = read_pids(outdir(home, "daemonizer") / "daemon")[0]
        assert pids_alive([daemon]) == []  # while the supervisor runs: its shutdown sweep would hide a leak
    assert run["outcome"] == "ok", run
    assert run["message"] == f"daemon {daemon} started"
    # Leaving a process behind is not a failure of the run, but it is worth a warning with the count.
    assert re.search(
        r"WARNING .*\[run %s\] ok in [\d.]+ s: returned: daemon \d+ started; "
        r"1 leftover process\(es\) killed after main\(\) returned" % run["run_id"],
        log,
    ), log


def test_escaped_daemon_is_killed_on_timeout(home: Path) -> None:
    main = (
        SPAWN_DAEMON
        + """
def main():
    spawn_daemon(os.environ["TASK_OUTPUT_DIR"])
    time.sleep(300)
"""
    )
    write_task(
        home / "Tasks", "daemonizer", main=main, config=task_config(limits="TimeoutSeconds = 2\nKillGraceSeconds = 1")
    )
    with SupervisorProcess(home) as sup:
        daemon = read_pids(wait_file(outdir(home, "daemonizer") / "daemon"))[0]
        run = finished_run(sup, "daemonizer")
        assert pids_alive([daemon]) == []
    assert run["outcome"] == "timeout", run
    # main() and the daemon, which lives in another session and is no child of main() any more.
    assert run["message"] == "timed out after 2 s (TimeoutSeconds=2); killed 2 process(es)"


# ------------------------------------------------------------------------------------------- 3. memory
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_memory_hog_is_stopped_and_others_keep_running(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import os, time

        def main():
            out = os.environ["TASK_OUTPUT_DIR"]
            chunks = []
            for step in range(1, 41):
                chunks.append(b"\\x01" * (20 << 20))  # filled, so every page is resident at once
                with open(os.path.join(out, "allocated"), "w") as f:
                    f.write(str(step * 20))
                time.sleep(0.1)  # 200 MB/s: a leak, not a single giant allocation
            return "never stopped"
    """
    write_task(home / "Tasks", "hog", main=main, config=task_config(limits="MemoryMB = 200"))
    write_task(home / "Tasks", "heartbeat", config=task_config(every=EVERY_SECOND))
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "hog")
        beats = sup.task_log("heartbeat").count("ok in")
        sup.wait_log("ok in", task="heartbeat", count=beats + 2)  # the other task kept its schedule
        assert sup.task_status("hog")["last_run"]["outcome"] == "memory"  # and the supervisor answers
        log = sup.task_log("hog")
        # As root on a machine with a writable memory cgroup the kernel enforces the limit.
        by_cgroup = re.search(r"containment: .*memory: cgroup", sup.log()) is not None
        assert sup.proc is not None and sup.proc.poll() is None
    assert run["outcome"] == "memory", run
    if by_cgroup:
        assert re.fullmatch(
            r"memory limit exceeded: the kernel's OOM killer ended \d+ process\(es\) at "
            r"MemoryMB=200 \(cgroup v[12] memory controller\)(; killed \d+ process\(es\))?",
            run["message"],
        ), run
    else:
        assert re.fullmatch(
            r"memory limit exceeded: tree resident \d+ MB > MemoryMB=200; killed 1 process\(es\)", run["message"]
        ), run
    assert f"[run {run['run_id']}] memory in" in log
    # The limit is checked every 0.25 s and the hog grows 200 MB/s, so the sample that caught it is at most
    # ~50 MB past the limit; the other 50 MB of the margin absorb a loop turn delayed by a busy machine.
    # A cgroup stops it at the limit itself, often before any sample saw it above.
    allocated = int((outdir(home, "hog") / "allocated").read_text())
    print(f"memory hog: peak {run['peak_rss_mb']} MB, allocated {allocated} MB when killed")  # shown by -rP
    if not by_cgroup:
        assert 200 < run["peak_rss_mb"] <= 300, run
    assert allocated <= 300, f"the hog kept growing to {allocated} MB after crossing the limit"


# ---------------------------------------------------------------------------------------------- 4. CPU
SPIN = (
    "import sys, time\nstart = time.process_time()\nwhile time.process_time() - start < float(sys.argv[1]):\n    pass\n"
)


@pytest.mark.parametrize("where", ["main", "grandchild"])
def test_cpu_spinner_is_stopped_by_cpu_seconds(home: Path, where: str) -> None:
    main = f"""
        import os, subprocess, sys, time

        def main():
            if {where!r} == "main":
                while True:
                    pass
            # A spinner two levels down: main() -> sh -> python, main() itself idle.
            subprocess.Popen(["sh", "-c", '"$0" "$1" 100000', sys.executable,
                              os.path.join(os.environ["TASK_DIR"], "spin_script.py")])
            time.sleep(300)
    """
    write_task(
        home / "Tasks",
        "spinner",
        main=main,
        config=task_config(limits="CPUSeconds = 2"),
        extra={"spin_script.py": SPIN},
    )
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "spinner")
        log = sup.task_log("spinner")
    assert run["outcome"] == "timeout", run
    assert re.fullmatch(
        r"CPU limit exceeded: tree used [\d.]+ CPU s > CPUSeconds=2; killed \d process\(es\)", run["message"]
    ), run
    assert run["cpu_s"] > 2, run
    assert f"[run {run['run_id']}] timeout in" in log and "CPU limit exceeded" in log


def test_cpu_of_finished_orphans_counts_toward_cpu_seconds(home: Path) -> None:
    """Short-lived orphaned workers are reaped by the monitor; their CPU seconds must not vanish with them."""
    main = """
        import os, subprocess, sys, time

        def main():
            out = os.environ["TASK_OUTPUT_DIR"]
            script = os.path.join(os.environ["TASK_DIR"], "spin_script.py")
            for i in range(8):
                done = os.path.join(out, f"spun{i}")
                # `&` then exit: the worker is orphaned at once and re-parented to the run's monitor.
                subprocess.run(["sh", "-c", '"$0" "$1" 0.6 && touch "$2" &', sys.executable, script, done])
                deadline = time.monotonic() + 60
                while not os.path.exists(done):
                    if time.monotonic() > deadline:
                        raise RuntimeError("worker did not finish")
                    time.sleep(0.02)
            return "8 workers x 0.6 CPU s"
    """
    write_task(
        home / "Tasks",
        "workers",
        main=main,
        config=task_config(limits="CPUSeconds = 2"),
        extra={"spin_script.py": SPIN},
    )
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "workers")
    # 4.8 CPU seconds in total, never more than ~0.6 alive at once: only counting the dead catches it.
    assert run["outcome"] == "timeout", run
    assert run["message"].startswith("CPU limit exceeded"), run


def test_sleeper_is_stopped_by_timeout_seconds(home: Path) -> None:
    main = "import time\n\ndef main():\n    time.sleep(300)\n"
    write_task(home / "Tasks", "sleeper", main=main, config=task_config(limits="TimeoutSeconds = 2"))
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "sleeper")
        log = sup.log()
    assert run["outcome"] == "timeout", run
    assert run["message"] == "timed out after 2 s (TimeoutSeconds=2); killed 1 process(es)"
    assert f"task 'sleeper': run {run['run_id']} timeout in" in log


# ------------------------------------------------------------------------- 5./6. the supervisor dies
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_sigkilled_supervisor_takes_its_runs_down_and_restarts_clean(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = (
        SPAWN_DAEMON
        + """
import subprocess

def main():
    out = os.environ["TASK_OUTPUT_DIR"]
    if os.path.exists(os.path.join(out, "calm")):
        return "calm"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sh", "-c", 'trap "" TERM; sleep 300 & echo $! > "$1/grandchild"; wait', "sh", out])
    daemon = spawn_daemon(out)
    while not os.path.exists(os.path.join(out, "grandchild")):
        time.sleep(0.01)
    with open(os.path.join(out, "pids.tmp"), "w") as f:
        f.write(f"{os.getpid()} {child.pid} {open(os.path.join(out, 'grandchild')).read().strip()} {daemon}")
    os.rename(os.path.join(out, "pids.tmp"), os.path.join(out, "pids"))
    time.sleep(300)
"""
    )
    write_task(home / "Tasks", "tree", main=main, config=task_config(limits="KillGraceSeconds = 30"))
    out = outdir(home, "tree")
    sup = SupervisorProcess(home).start()
    try:
        pids = read_pids(wait_file(out / "pids"))
        run_id = sup.task_status("tree")["running"]["run_id"]
        assert len(cookie_processes(run_cookie(home, run_id))) >= 5  # monitor, main, sh, sleep, daemon
    finally:
        sup.kill()
    # Nobody restarts anything: the monitors notice on their own (PDEATHSIG, control pipe EOF). Their
    # orphan grace (2 s) applies, not the task's KillGraceSeconds=30.
    wait_for(
        lambda: not cookie_processes(run_cookie(home)),
        timeout=10,
        what="every process of the killed supervisor's runs to die",
    )
    assert pids_alive(pids) == []

    (out / "calm").write_text("")
    with SupervisorProcess(home) as again:  # starts: the lock died with its holder
        again.wait_log("returned: calm", task="tree")
        log = again.log()
        runs = {r["run_id"]: r for r in again.history("tree")}
    assert f"task 'tree': run {run_id} was interrupted by a supervisor crash" in log
    assert runs[run_id]["outcome"] == "interrupted"
    assert "left behind by a previous supervisor" not in log  # nothing was left to clean


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_restart_after_crash_kills_only_its_own_leftovers(home: Path, tmp_path: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import os, subprocess, time

        def main():
            out = os.environ["TASK_OUTPUT_DIR"]
            child = subprocess.Popen(["sleep", "300"])
            with open(os.path.join(out, "pids"), "w") as f:
                f.write(f"{os.getpid()} {child.pid}")
            time.sleep(300)
    """
    write_task(home / "Tasks", "victim", main=main, config=task_config())
    sup = SupervisorProcess(home).start()
    assert sup.proc is not None
    try:
        task_pid, orphan = read_pids(wait_file(outdir(home, "victim") / "pids"))
        run_id = sup.task_status("victim")["running"]["run_id"]
        monitor = psutil.Process(task_pid).parent()  # the supervisor's child, or a fork server's
        assert monitor is not None
        # A crash the monitor cannot clean up after: freeze the supervisor (so it notices nothing), SIGKILL
        # the monitor (main() follows through its PDEATHSIG), then SIGKILL the supervisor. The grandchild
        # is left running, re-parented to init, still carrying the run's cookie.
        sup.proc.send_signal(signal.SIGSTOP)
        monitor.kill()
        wait_for(lambda: pids_alive([monitor.pid, task_pid]) == [], timeout=10, what="monitor and main() gone")
    finally:
        sup.kill()
    assert pids_alive([orphan]) == [orphan], "the simulated leftover must exist before the restart"
    env = dict(os.environ)
    ours = subprocess.Popen(["sleep", "300"], env={**env, "TASKAUTOMATION_RUN_COOKIE": run_cookie(home, run_id)})
    other_home = tmp_path / "another home"
    foreign = subprocess.Popen(
        ["sleep", "300"], env={**env, "TASKAUTOMATION_RUN_COOKIE": run_cookie(other_home, run_id)}
    )
    try:
        wait_for(lambda: len(cookie_processes(run_cookie(home, run_id))) == 2, timeout=10, what="leftovers")
        (home / "Tasks" / "victim" / "config.ini").write_text(task_config(startup=False, window=_window_not_now()))
        with SupervisorProcess(home) as again:
            log = again.wait_log("left behind by a previous supervisor")
            assert ours.wait(timeout=10) == -signal.SIGKILL
            # Killed by the start-up sweep, not by the shutdown sweep: checked while the supervisor runs.
            wait_for(lambda: pids_alive([orphan]) == [], timeout=5, what="the real leftover to die")
            assert cookie_processes(run_cookie(home, run_id)) == []
            runs = {r["run_id"]: r for r in again.history("victim")}
        assert re.search(r"killed 2 process\(es\) left behind by a previous supervisor: ", log), log
        assert runs[run_id]["outcome"] == "interrupted"
        # A process whose cookie names another home is not provably ours: it must be untouched.
        assert foreign.poll() is None
    finally:
        for proc in (ours, foreign):
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_monitor_killed_from_outside_leaves_no_orphans(home: Path, launcher: str) -> None:
    """SIGKILL of a run's monitor (an admin's kill -9, the OOM killer): nothing could stop the tree, so the
    supervisor finds what is left of the run by its cookie; the run is recorded as crashed."""
    use_launcher(home, launcher)
    main = (
        SPAWN_DAEMON
        + """
import subprocess

def main():
    out = os.environ["TASK_OUTPUT_DIR"]
    child = subprocess.Popen(["sleep", "300"])
    daemon = spawn_daemon(out)
    with open(os.path.join(out, "pids.tmp"), "w") as f:
        f.write(f"{os.getpid()} {child.pid} {daemon}")
    os.rename(os.path.join(out, "pids.tmp"), os.path.join(out, "pids"))
    time.sleep(300)
"""
    )
    write_task(home / "Tasks", "headless", main=main, config=task_config())
    with SupervisorProcess(home) as sup:
        assert sup.proc is not None
        pids = read_pids(wait_file(outdir(home, "headless") / "pids"))
        monitor = psutil.Process(pids[0]).parent()  # the supervisor's child, or a fork server's
        assert monitor is not None
        monitor.kill()
        run = finished_run(sup, "headless")
        assert sup.task_status("headless")["last_run"]["outcome"] == "crashed"  # the supervisor carries on
        # Checked while the supervisor still runs: its shutdown sweep would hide a leak found only then.
        assert pids_alive(pids) == []
        assert run["outcome"] == "crashed" and run["message"] == "run monitor killed by signal SIGKILL", run


def _window_not_now() -> str:
    """A one-minute window that excludes the current minute, so a task loads but does not run by itself."""
    import datetime

    minute = "12:00" if datetime.datetime.now().strftime("%H:%M") == "00:00" else "00:00"
    return f"AllowedFrom = {minute}\nAllowedTo = {minute}\n"


# ------------------------------------------------------------------------------------- 7. stdout flood
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_stdout_flood_is_capped_and_supervisor_memory_stays_flat(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import sys

        def main():
            block = (b"x" * 1023 + b"\\n") * 1024  # 1 MiB of 1 KiB lines
            for _ in range(100):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
            return "flooded"
    """
    write_task(home / "Tasks", "flood", main=main, config=task_config(startup=False, window=_window_not_now()))
    with SupervisorProcess(home) as sup:
        assert sup.proc is not None
        wait_for(lambda: sup.task_status("flood")["state"] == "scheduled", timeout=30, what="flood loaded")
        before = psutil.Process(sup.proc.pid).memory_info().rss
        started = cli(home, "run-now", "flood")
        assert started.returncode == 0, started.stderr
        run = finished_run(sup, "flood")
        after = psutil.Process(sup.proc.pid).memory_info().rss
    assert run["outcome"] == "ok" and run["message"] == "flooded", run
    log_files = list(sup.paths.task_logs.glob("flood.log*"))
    text = sup.task_log("flood")
    assert f"[output over 1048576 bytes: {100 * 1048576 - 1048576} more bytes dropped]" in text
    # 1 MiB of output kept, plus a timestamp prefix per kept line and the lifecycle lines.
    assert sum(p.stat().st_size for p in log_files) < 1.5 * 1048576
    print(
        f"flood: supervisor RSS {before / 1048576:.1f} -> {after / 1048576:.1f} MB, "
        f"task logs {sum(p.stat().st_size for p in log_files)} bytes"
    )
    assert after - before < 30 * 1048576, f"supervisor RSS grew by {(after - before) / 1048576:.1f} MB"


# ---------------------------------------------------------------------------------- 8. zombie factory
def test_zombie_factory_leaves_no_zombies(home: Path) -> None:
    main = """
        import os, time

        def state(pid):
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            return stat[stat.rfind(b")") + 2:][:1]

        def main():
            pids = []
            for _ in range(100):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                pids.append(pid)
            with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "pids"), "w") as f:
                f.write(" ".join(map(str, pids)))
            # Return only once all 100 are zombies (exited, never waited), so none counts as a leftover.
            deadline = time.monotonic() + 30
            while any(state(pid) != b"Z" for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.01)
            return f"{sum(state(pid) == b'Z' for pid in pids)} zombies"
    """
    write_task(home / "Tasks", "zombies", main=main, config=task_config())
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "zombies")
        log = sup.wait_log("ok in", task="zombies")
        assert supervisor_zombies(sup) == []
        pids = read_pids(outdir(home, "zombies") / "pids")
        # Re-parented to the monitor when main()'s process exited, and reaped by it before it reported.
        assert [pid for pid in pids if is_zombie_or_gone(pid) == "zombie"] == []
    assert run["outcome"] == "ok" and run["message"] == "100 zombies", run
    assert "leftover" not in log
    assert len(pids) == 100


# ------------------------------------------------------------------------------ 9./10. hostile tasks
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_task_killing_its_own_process_group(home: Path, sig: signal.Signals, launcher: str) -> None:
    use_launcher(home, launcher)
    main = f"""
        import os, subprocess

        def main():
            child = subprocess.Popen(["sleep", "300"])  # same process group: dies with it
            with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "pids"), "w") as f:
                f.write(f"{{os.getpid()}} {{child.pid}}")
            os.killpg(0, {int(sig)})
    """
    write_task(home / "Tasks", "suicidal", main=main, config=task_config())
    write_task(home / "Tasks", "steady", config=task_config(every=EVERY_SECOND))
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "suicidal")
        beats = sup.task_log("steady").count("ok in")
        sup.wait_log("ok in", task="steady", count=beats + 2)
        assert sup.proc is not None and sup.proc.poll() is None
        assert sup.task_status("suicidal")["last_run"]["outcome"] == "crashed"
        log = sup.task_log("suicidal")
        assert pids_alive(read_pids(outdir(home, "suicidal") / "pids")) == []
    assert run["outcome"] == "crashed", run
    assert run["signal"] == sig.name and run["message"] == f"killed by signal {sig.name}", run
    assert f"[run {run['run_id']}] crashed in" in log and f"killed by signal {sig.name}" in log
    assert {r["outcome"] for r in sup.history("steady")} == {"ok"}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_task_closing_its_stdio_still_reports(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import os

        def main():
            os.close(1)
            os.close(2)
            with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "after"), "w") as f:
                f.write("still running")
            return "closed stdio and carried on"
    """
    write_task(home / "Tasks", "mute", main=main, config=task_config())
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "mute")
        log = sup.wait_log("ok in", task="mute")
    assert run["outcome"] == "ok" and run["message"] == "closed stdio and carried on", run
    assert run["exit_code"] == 0
    assert "returned: closed stdio and carried on" in log
    assert (outdir(home, "mute") / "after").read_text() == "still running"


# --------------------------------------------------------------------------------- 11. exit codes
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_exit_codes_of_the_tasks_own_subprocesses_are_not_stolen(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import subprocess

        def main():
            # Repeated, so that a reaper racing in the task's own process would be caught at least once.
            codes = {subprocess.run(["sh", "-c", "exit 7"]).returncode for _ in range(30)}
            return " ".join(map(str, sorted(codes)))
    """
    write_task(home / "Tasks", "codes", main=main, config=task_config())
    with SupervisorProcess(home) as sup:
        run = finished_run(sup, "codes")
        sup.wait_log("returned: 7", task="codes")
    assert run["outcome"] == "ok" and run["message"] == "7", run


# -------------------------------------------------------------------------------- 12. home defaults
def test_home_limits_are_defaults_that_a_task_overrides(home: Path) -> None:
    (home / "taskautomation.ini").write_text("[Limits]\nTimeoutSeconds = 2\nKillGraceSeconds = 1\n")
    slow = "import time\n\ndef main():\n    time.sleep({})\n    return 'slept'\n"
    write_task(home / "Tasks", "inherits", main=slow.format(300), config=task_config())
    # Outlives the home default by 2 s: it can only return if its own TimeoutSeconds replaced the default.
    write_task(home / "Tasks", "overrides", main=slow.format(4), config=task_config(limits="TimeoutSeconds = 60"))
    with SupervisorProcess(home) as sup:
        inherited = finished_run(sup, "inherits")
        overridden = finished_run(sup, "overrides")
    assert inherited["outcome"] == "timeout", inherited
    assert inherited["message"] == "timed out after 2 s (TimeoutSeconds=2); killed 1 process(es)"
    assert overridden["outcome"] == "ok" and overridden["message"] == "slept", overridden
    assert overridden["duration_s"] > 2


# ----------------------------------------------------------------------------------- 13. no leaks
@pytest.mark.timeout(180)
def test_supervisor_files_and_memory_stay_flat_over_many_runs(home: Path) -> None:
    main = """
        import subprocess

        def main():
            print("a line of output")
            subprocess.run(["true"])
            return "short"
    """
    write_task(home / "Tasks", "short", main=main, config=task_config(every="0.003"))  # 0.18 s
    with SupervisorProcess(home) as sup:
        assert sup.proc is not None
        proc = psutil.Process(sup.proc.pid)
        # Warm-up: the first runs load modules, open the history DB and the task log for good.
        sup.wait_log("ok in", task="short", count=5, timeout=60)
        fds_before, rss_before, threads_before = proc.num_fds(), proc.memory_info().rss, proc.num_threads()
        sup.wait_log("ok in", task="short", count=55, timeout=150)
        fds_after, rss_after, threads_after = proc.num_fds(), proc.memory_info().rss, proc.num_threads()
        runs = [r for r in sup.history("short") if r["outcome"] not in ("skipped", None)]
        for run in runs:  # while the supervisor runs: its shutdown sweep would hide a leak
            assert_run_gone(home, run["run_id"])
    print(
        f"{len(runs)} runs: fds {fds_before} -> {fds_after}, threads {threads_before} -> {threads_after}, "
        f"RSS {rss_before / 1048576:.1f} -> {rss_after / 1048576:.1f} MB"
    )
    assert len(runs) >= 55 and {r["outcome"] for r in runs} == {"ok"}
    # A run in flight holds 3 pipe ends and a relay thread; one may be in flight at either measurement.
    assert fds_after - fds_before <= 6, (fds_before, fds_after)
    assert threads_after - threads_before <= 2, (threads_before, threads_after)
    assert rss_after - rss_before < 20 * 1048576, f"RSS grew by {(rss_after - rss_before) / 1048576:.1f} MB"


# ------------------------------------------------------------------------------ Runner-level checks
def test_monitor_stops_the_tree_when_its_control_pipe_closes(tmp_path: Path) -> None:
    """The supervisor-gone path without a supervisor: closing the control pipe is all a crash does to it."""
    import queue

    from supervisor.execution.runner import Runner, child_environment
    from supervisor.model import ProcessLaunch, RunMode

    home = tmp_path
    main = (
        SPAWN_DAEMON
        + """
def main():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spawn_daemon(os.environ["TASK_OUTPUT_DIR"])
    time.sleep(300)
"""
    )
    folder = write_task(home / "Tasks", "orphaned", main=main)
    cookie = run_cookie(home, "run-1")
    env = child_environment(
        os.environ,
        task="orphaned",
        run_id="run-1",
        task_dir=folder,
        output_dir=folder / "Output",
        env_dir=Path(sys.executable).parent.parent,
        cookie=cookie,
    )
    exits: queue.Queue[Any] = queue.Queue()
    runner = Runner(
        output_cap_bytes=1 << 20, on_output=lambda spec, line: None, on_exit=lambda spec, report: exits.put(report)
    )
    run = runner.launch(
        ProcessLaunch(
            task="orphaned",
            run_id="run-1",
            mode=RunMode.MAIN,
            python=Path(sys.executable),
            home=home,
            kill_grace_s=60,
            env=env,
        )
    )
    try:
        daemon = read_pids(wait_file(folder / "Output" / "daemon"))[0]
        run.close_control()  # what the kernel does to the pipe when the supervisor is SIGKILLed
        report = exits.get(timeout=30)
    finally:
        run.stop(kill_now=True)
        runner.join(timeout=30)
    assert report.monitor is not None and report.monitor.stop == "supervisor-gone", report
    assert report.monitor.signal == signal.SIGKILL  # main() ignored SIGTERM: killed after the short grace
    assert pids_alive([daemon]) == []
    assert cookie_processes(cookie) == []
