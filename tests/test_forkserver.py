"""[Supervisor] Launcher = fork: the run contract under both launchers, the fork server's fallback and marking.

End to end with a real supervisor: each run's probe task writes what it sees (interpreter, prefix, path,
cwd, environment and secrets, module state, random, its parents' command lines, its /proc environ) to its
Output/ folder; the same assertions hold for ``spawn`` and ``fork``, and for ``fork`` the run's monitor must
be a child of a fork server (so a silent fallback to spawn cannot pass for a fork).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

import psutil
import pytest

from supervisor.execution import _wire as wire
from supervisor.execution.forkserver import ForkPool
from tests.support.harness import SupervisorProcess, cookie_processes, run_cookie
from tests.support.helpers import LAUNCHERS, use_launcher, wait_for, write_task

pytestmark = pytest.mark.timeout(120)

EVERY_SECOND = "[Frequency]\nEveryXMinutes = 0.02\n"  # 1.2 s

PROBE = """
import atexit, json, os, random, sys, threading

STATE = []  # module state: a run that saw another run's module would count more than 1

def _cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().replace(b"\\0", b" ").decode()

def _ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def initialize():
    with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "init-launcher"), "w") as f:
        f.write(_cmdline(_ppid(os.getppid())))


def main():
    STATE.append(1)
    out = os.environ["TASK_OUTPUT_DIR"]
    run_id = os.environ["TASK_RUN_ID"]
    monitor = os.getppid()
    with open("/proc/self/environ", "rb") as f:
        environ = f.read().split(b"\\0")
    data = {
        "executable": sys.executable, "prefix": sys.prefix, "path": sys.path, "cwd": os.getcwd(),
        "secret": os.environ.get("PROBE_SECRET"), "state": len(STATE), "random": random.random(),
        "threads": threading.active_count(), "argv": sys.argv, "sid": os.getsid(0),
        "launcher": _cmdline(_ppid(monitor)),
        "cookie": [e.decode() for e in environ if e.startswith(b"TASKAUTOMATION_RUN_COOKIE=")],
        "run_id": run_id, "stdin": sys.stdin.read(),
    }
    atexit.register(lambda: open(os.path.join(out, "atexit-" + run_id), "w").write("ran"))
    with open(os.path.join(out, "tmp-" + run_id), "w") as f:
        json.dump(data, f)
    os.rename(os.path.join(out, "tmp-" + run_id), os.path.join(out, "run-" + run_id + ".json"))
    print("probe says", os.environ.get("PROBE_SECRET"))
    return "probed"
"""


def probes(home: Path) -> list[dict[str, object]]:
    out = home / "Tasks" / "probe" / "Output"
    return [json.loads(p.read_text()) for p in sorted(out.glob("run-*.json"))]


def server_pids(sup: SupervisorProcess) -> list[int]:
    assert sup.proc is not None
    children = psutil.Process(sup.proc.pid).children()
    return [c.pid for c in children if "_forkserver.py" in " ".join(c.cmdline())]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_run_contract_holds_under_both_launchers(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    (home / ".env").write_text("PROBE_SECRET=hunter2-secret\n")
    write_task(home / "Tasks", "probe", main=PROBE, config=EVERY_SECOND, initialize=None)
    write_task(home / "Tasks", "exits", main="import sys\ndef main():\n    sys.exit(3)\n", config=EVERY_SECOND)
    write_task(
        home / "Tasks",
        "segv",
        main="import os, signal\ndef main():\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
        config=EVERY_SECOND,
    )
    write_task(
        home / "Tasks",
        "slow",
        main="import time\ndef main():\n    time.sleep(60)\n",
        config=EVERY_SECOND + "[Limits]\nTimeoutSeconds = 1\nKillGraceSeconds = 1\n",
    )
    with SupervisorProcess(home) as sup:
        wait_for(lambda: len(probes(home)) >= 2, timeout=60, what="two probe runs")
        sup.wait_log("failed in", task="exits")
        sup.wait_log("crashed in", task="segv")
        sup.wait_log("timeout in", task="slow")
        log = sup.log()
        task_log = sup.task_log("probe")
        exits, segv = sup.history("exits")[-1], sup.history("segv")[-1]
        slow = [r["outcome"] for r in sup.history("slow")]
    assert f"launcher: {launcher}" in log
    assert "runs of this env are spawned" not in log  # no fallback happened
    first, second = probes(home)[:2]
    env_dir = str(home / "envs")
    for data in (first, second):
        assert str(data["executable"]).startswith(env_dir)
        assert data["prefix"] == os.path.dirname(os.path.dirname(str(data["executable"])))
        path = [str(p) for p in data["path"]]  # type: ignore[attr-defined]
        assert path[0] == str(home) and any(p.startswith(str(data["prefix"])) and "site-packages" in p for p in path)
        assert data["cwd"] == str(home) and data["stdin"] == ""
        assert data["secret"] == "hunter2-secret"
        assert data["state"] == 1, "a run saw the module state of another run"
        assert data["threads"] == 1
        assert data["cookie"] == [f"TASKAUTOMATION_RUN_COOKIE={run_cookie(home, str(data['run_id']))}"]
        assert str(data["argv"][0]).endswith("_shim.py")  # type: ignore[index]
        assert (home / "Tasks" / "probe" / "Output" / f"atexit-{data['run_id']}").read_text() == "ran"
        assert ("_forkserver.py" in str(data["launcher"])) == (launcher == "fork"), data["launcher"]
    init = (home / "Tasks" / "probe" / "Output" / "init-launcher").read_text()
    assert ("_forkserver.py" in init) == (launcher == "fork"), "initialize() goes through the same launcher"
    assert first["random"] != second["random"]
    assert first["sid"] != second["sid"]
    assert "probe says" in task_log and "hunter2-secret" not in task_log
    assert exits["outcome"] == "failed" and exits["exit_code"] == 3, exits
    assert segv["outcome"] == "crashed" and segv["signal"] == "SIGSEGV", segv
    assert "timeout" in slow, slow


def test_a_killed_or_hung_server_never_fails_a_run(home: Path) -> None:
    use_launcher(home, "fork")
    write_task(home / "Tasks", "probe", main=PROBE, config=EVERY_SECOND)
    with SupervisorProcess(home) as sup:
        wait_for(lambda: len(probes(home)) >= 1, timeout=60, what="a first run")
        first = server_pids(sup)
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)  # a dead server: the next run gets a new one
        wait_for(lambda: len(probes(home)) >= 3, timeout=60, what="runs after the server died")
        wait_for(lambda: server_pids(sup) not in ([], first), timeout=30, what="a new server")
        hung = server_pids(sup)
        os.kill(hung[0], signal.SIGSTOP)  # a hung server: no answer in time, the run is spawned
        count = len(probes(home))
        wait_for(lambda: len(probes(home)) >= count + 2, timeout=60, what="runs while the server hangs")
        log = sup.log()
        runs = sup.history("probe")
        after = probes(home)[count:]
    assert "the fork server for" in log and "no answer within" in log
    assert log.count("no answer within") == 1, "a fallback is logged once"
    outcomes = [(r["outcome"], r.get("summary")) for r in runs]
    # (a slot due while the loop waited for the hung server's answer is skipped, as any overlapping slot)
    assert all(outcome in ("ok", "skipped", None) for outcome, _ in outcomes), outcomes
    assert all("_forkserver.py" not in str(d["launcher"]) for d in after)  # spawned while it rests
    assert not psutil.pid_exists(hung[0]) or psutil.Process(hung[0]).status() == psutil.STATUS_ZOMBIE


def test_server_is_found_by_the_sweep_after_a_supervisor_sigkill(home: Path) -> None:
    use_launcher(home, "fork")
    write_task(home / "Tasks", "probe", main=PROBE, config=EVERY_SECOND)
    sup = SupervisorProcess(home).start()
    try:
        wait_for(lambda: len(probes(home)) >= 1, timeout=60, what="a forked run")
        server = server_pids(sup)
        assert server and set(server) <= set(cookie_processes(run_cookie(home)))
        assert sup.proc is not None
        sup.proc.send_signal(signal.SIGSTOP)  # frozen, then killed: nothing of it gets to clean up
        os.kill(server[0], signal.SIGSTOP)  # and the server cannot notice the socket's EOF on its own
    finally:
        sup.kill()
    assert cookie_processes(run_cookie(home)) == server
    with SupervisorProcess(home) as again:
        log = again.wait_log("left behind by a previous supervisor")
        wait_for(lambda: not psutil.pid_exists(server[0]), timeout=10, what="the old server gone")
    assert "killed 1 process(es) left behind by a previous supervisor" in log


def _run_once(pool: ForkPool, python: Path, home: Path) -> tuple[object, bytes]:
    """One initialize() of task ``t`` through ``pool.popen`` as the runner calls it; (process, report)."""
    report_r, report_w = os.pipe()
    control_r, control_w = os.pipe()
    out_r, out_w = os.pipe()
    argv = wire.shim_argv(
        python=str(python),
        shim="unused",
        mode="initialize",
        task="t",
        report_fd=report_w,
        control_fd=control_r,
        grace_s=1.0,
        supervisor_pid=os.getpid(),
    )
    process = pool.popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=out_w,
        stderr=subprocess.STDOUT,
        pass_fds=(report_w, control_r),
        cwd=str(home),
        env=dict(os.environ),
        start_new_session=True,
        close_fds=True,
    )
    for fd in (report_w, control_r, out_w):
        os.close(fd)
    try:
        assert process.wait(timeout=30) == 0
        return process, os.read(report_r, 65536)
    finally:
        for fd in (report_r, control_w, out_r):
            os.close(fd)


def test_pool_retires_a_changed_env_an_idle_server_and_closes_clean(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_task(home / "Tasks", "t", main="def main():\n    pass\n", config=EVERY_SECOND)
    env = tmp_path / "env"
    venv.create(env, system_site_packages=False, with_pip=False, symlinks=True)
    python = env / "bin" / "python"
    pool = ForkPool(cookie_prefix="test-forkpool/", logger=logging.getLogger("test"), idle_s=3600.0)
    servers = []
    try:
        for _ in range(2):
            _process, report = _run_once(pool, python, home)
            assert b'"status":"ok"' in report and pool.forked >= 1 and pool.spawned == 0
            servers.append(pool.server_pids())
        assert servers[0] == servers[1] and len(servers[0]) == 1, "one server per env, reused"
        old = psutil.Process(servers[0][0])
        (env / "pyvenv.cfg").write_text((env / "pyvenv.cfg").read_text() + "\n")  # a changed env
        os.utime(env / "pyvenv.cfg", ns=(1, 1))
        _run_once(pool, python, home)
        assert pool.server_pids() != servers[0], "a changed env must get a new server"
        old.wait(timeout=10)  # the old server retired itself (it had no run in flight)
        pool.idle_s = 0.0
        idle = psutil.Process(pool.server_pids()[0])
        pool.retire_idle()
        assert pool.server_pids() == []
        idle.wait(timeout=10)
        _run_once(pool, python, home)  # a retired env gets a new server on its next run
        last = psutil.Process(pool.server_pids()[0])
    finally:
        pool.close()
    assert not last.is_running() or last.status() == psutil.STATUS_ZOMBIE
    assert pool.server_pids() == [] and sys.executable  # nothing left behind


def test_a_run_in_flight_outlives_its_killed_server(home: Path) -> None:
    use_launcher(home, "fork")
    main = """
        import os, time

        def main():
            out = os.environ["TASK_OUTPUT_DIR"]
            open(os.path.join(out, "started"), "w").close()
            while not os.path.exists(os.path.join(out, "go")):
                time.sleep(0.02)
            return "finished after its server died"
    """
    write_task(
        home / "Tasks", "long", main=main, config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n"
    )
    out = home / "Tasks" / "long" / "Output"
    with SupervisorProcess(home) as sup:
        wait_for(lambda: (out / "started").exists(), timeout=60, what="the run to start")
        server = server_pids(sup)
        assert len(server) == 1
        os.kill(server[0], signal.SIGKILL)
        wait_for(lambda: server_pids(sup) == [], timeout=10, what="the server reaped")
        (out / "go").write_text("")
        sup.wait_log("ok in", task="long")
        # The row is written behind the log line: wait for it rather than read it at once.
        run = wait_for(
            lambda: (lambda h: h[0] if h and h[0]["outcome"] else None)(sup.history("long")), timeout=30, what="the row"
        )
    assert run["outcome"] == "ok" and run["message"] == "finished after its server died", run
