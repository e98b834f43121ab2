"""End to end: a real supervisor process on a temporary home, real envs, real child processes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess, script
from tests.support.helpers import LAUNCHERS, build_wheel, use_launcher, wait_for, write_task

pytestmark = pytest.mark.timeout(120)

EVERY_SECOND = "[Frequency]\nEveryXMinutes = 0.02\n"  # 1.2 s


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_main_return_string_and_traceback_are_logged(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    write_task(
        home / "Tasks",
        "good",
        main="def main():\n    print('some output')\n    return 'all fine'\n",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
    )
    write_task(
        home / "Tasks",
        "bad",
        main="def main():\n    raise ValueError('boom 42')\n",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="good")
        sup.wait_log("failed in", task="bad")
        good, bad = sup.task_log("good"), sup.task_log("bad")
        assert "initialize(): ready" in good
        assert "some output" in good
        assert "returned: all fine" in good
        assert "Traceback (most recent call last)" in bad and "ValueError: boom 42" in bad
        assert sup.task_status("good")["last_run"]["outcome"] == "ok"
        assert sup.task_status("good")["last_run"]["message"] == "all fine"
        last_bad = sup.task_status("bad")["last_run"]
        assert last_bad["outcome"] == "failed" and "ValueError: boom 42" in last_bad["message"]
    assert "supervisor stopped" in sup.log()


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_run_environment_cwd_stdin_and_helper_imports(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import json, os, sys
        import Tasks.probe.helper as helper

        def main():
            data = {
                "cwd": os.getcwd(), "path0": sys.path[0], "stdin": sys.stdin.read(),
                "executable": sys.executable, "helper": helper.VALUE,
                "env": {k: os.environ.get(k) for k in ("TASK_NAME", "TASK_DIR", "TASK_OUTPUT_DIR", "TASK_RUN_ID")},
            }
            with open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "probe.json"), "w") as f:
                json.dump(data, f)
            return "probed"
    """
    write_task(
        home / "Tasks",
        "probe",
        main=main,
        extra={"helper.py": "VALUE = 'from helper'\n"},
        config="[Frequency]\nEveryXMinutes = 60\n",
    )
    with SupervisorProcess(home) as sup:
        out = home / "Tasks" / "probe" / "Output" / "probe.json"
        # The file exists before json.dump has written it: wait for the whole document.
        wait_for(lambda: out.exists() and out.read_text().endswith("}"), timeout=30, what="probe output")
        data = json.loads(out.read_text())
        run_id = sup.history("probe")[0]["run_id"]
    assert data["cwd"] == str(home)
    assert data["path0"] == str(home)
    assert data["stdin"] == ""
    assert data["helper"] == "from helper"
    assert data["executable"].startswith(str(home / "envs")), "main() must run in the task's own env"
    assert data["env"] == {
        "TASK_NAME": "probe",
        "TASK_DIR": str(home / "Tasks" / "probe"),
        "TASK_OUTPUT_DIR": str(home / "Tasks" / "probe" / "Output"),
        "TASK_RUN_ID": run_id,
    }


def test_run_on_startup_testing_and_enabled_flags(home: Path) -> None:
    marker = (
        "def main():\n    import os\n    open(os.path.join(os.environ['TASK_OUTPUT_DIR'], 'ran'), 'a').write('x')\n"
    )
    # A window that excludes "now" for sure: RunOnStartup must run regardless of it.
    write_task(
        home / "Tasks",
        "startup",
        main=marker,
        config="[Frequency]\nEveryXMinutes = 60\nAllowedFrom = 00:00\nAllowedTo = 00:00\n"
        "[Global]\nRunOnStartup = True\n"
        if _now_minute() != "00:00"
        else "[Frequency]\nEveryXMinutes = 60\nAllowedFrom = 12:00\nAllowedTo = 12:00\n[Global]\nRunOnStartup = True\n",
    )
    write_task(home / "Tasks", "testing", main=marker, config=EVERY_SECOND + "[Global]\nTesting = True\n")
    write_task(home / "Tasks", "disabled", main=marker, config=EVERY_SECOND + "[Global]\nEnabled = False\n")
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="startup")
        sup.wait_log("[Testing] run confirmed", task="testing", count=2)
        sup.wait_log("disabled (Enabled=False)")
        assert sup.task_status("disabled")["state"] == "disabled"
        assert sup.task_status("disabled")["enabled"] is False
        assert sup.task_status("startup")["next_run"] is not None
        testing_runs = sup.history("testing")
    assert (home / "Tasks" / "startup" / "Output" / "ran").read_text() == "x"
    assert not (home / "Tasks" / "testing" / "Output" / "ran").exists()
    assert not (home / "Tasks" / "disabled" / "Output" / "ran").exists()
    assert {r["outcome"] for r in testing_runs} == {"testing"}
    assert [r["trigger"] for r in sup.history("startup")] == ["startup"]


def _now_minute() -> str:
    import datetime

    return datetime.datetime.now().strftime("%H:%M")


BAD_INPUTS = {
    # name: (files, text the error must contain besides the task name)
    "bad value": ({"config.ini": "[Frequency]\nEveryXMinutes = often\n"}, "EveryXMinutes = 'often'"),
    "no schedule": ({"config.ini": "[Global]\nEnabled = True\n"}, "EveryXMinutes"),
    "bad bool": ({"config.ini": "[Frequency]\nEveryXMinutes = 5\n[Global]\nTesting = maybe\n"}, "'maybe'"),
    "bad window": ({"config.ini": "[Frequency]\nEveryXMinutes = 5\nAllowedFrom = 25:00\n"}, "'25:00'"),
    "syntax error": ({"main.py": "def main(:\n    pass\n"}, "main.py"),
    "no main": ({"main.py": "def initialize():\n    return 'x'\n"}, "main()"),
    "init raises": (
        {"main.py": "def main():\n    return 1\n\ndef initialize():\n    raise RuntimeError('init broke')\n"},
        "RuntimeError: init broke",
    ),
    "import fails": (
        {"main.py": "import no_such_module_xyz\n\ndef main():\n    return 1\n"},
        "No module named 'no_such_module_xyz'",
    ),
}


def test_each_bad_input_is_reported_and_others_run(home: Path) -> None:
    for name, (files, _) in BAD_INPUTS.items():
        folder = write_task(home / "Tasks", name)
        for filename, text in files.items():
            (folder / filename).write_text(text)
    folder = write_task(home / "Tasks", "undecodable")
    (folder / "config.ini").write_bytes(b"[Frequency]\nEveryXMinutes = \xff\xfe5\n")
    folder = write_task(home / "Tasks", "no main.py")
    (folder / "main.py").unlink()
    write_task(home / "Tasks", "healthy", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n")
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="healthy")
        wait_for(
            lambda: all(
                sup.task_status(n)["state"] in ("error", "env-failed")
                for n in [*BAD_INPUTS, "undecodable", "no main.py"]
            ),
            timeout=30,
            what="every bad task in state error",
        )
        log = sup.log()
        for name, (files, needle) in BAD_INPUTS.items():
            error = sup.task_status(name)["error"]
            assert f"task {name!r}" in error, error
            assert needle in error, (name, error)
            assert str(home / "Tasks" / name) in error, (name, error)
        undecodable = sup.task_status("undecodable")["error"]
        assert "config.ini" in undecodable and "task 'undecodable'" in undecodable
        assert "main.py missing" in sup.task_status("no main.py")["error"]
        assert sup.task_status("healthy")["last_run"]["outcome"] == "ok"
        for name in BAD_INPUTS:
            assert sup.history(name) == [], f"{name} must not have run"
    # Each broken folder is reported once, not once per loop turn.
    assert log.count("task 'bad value'") == 1 + log.count("task 'bad value': building")


def test_conflicting_pins_each_get_their_own_env(home: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "pinned", "1.0")
    build_wheel(wheels, "pinned", "2.0")
    main = "import pinned\n\ndef main():\n    return 'pinned ' + pinned.__version__\n"
    for name, version in (("old", "1.0"), ("new", "2.0")):
        write_task(
            home / "Tasks",
            name,
            main=main,
            config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
            requirements=f"--no-index\n--find-links {wheels}\npinned=={version}\n",
        )
    with SupervisorProcess(home) as sup:
        sup.wait_log("returned: pinned 1.0", task="old", timeout=60)
        sup.wait_log("returned: pinned 2.0", task="new", timeout=60)
    assert len([p for p in (home / "envs").iterdir() if p.is_dir()]) == 2


def test_unchanged_env_is_reused_across_restarts(home: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "reused", "1.0")
    write_task(
        home / "Tasks",
        "reuse",
        main="import reused\n\ndef main():\n    return reused.__version__\n",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
        requirements=f"--no-index --find-links {wheels}\nreused==1.0\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("returned: 1.0", task="reuse", timeout=60)
    first_log = sup.log()
    assert "building env" in first_log
    markers = {p: p.stat().st_mtime_ns for p in (home / "envs").glob("*/.taskautomation-env.json")}
    assert len(markers) == 1
    with SupervisorProcess(home) as sup:
        sup.wait_log("returned: 1.0", task="reuse", count=2, timeout=60)
    second_start = sup.log()[len(first_log) :]
    assert "building env" not in second_start
    assert {p: p.stat().st_mtime_ns for p in (home / "envs").glob("*/.taskautomation-env.json")} == markers


def test_failed_install_names_the_reason_and_others_run(home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write_task(
        home / "Tasks",
        "broken env",
        requirements=f"--no-index --find-links {tmp_path / 'empty'}\nnonexistent-package-xyz==1.0\n",
    )
    write_task(home / "Tasks", "fine", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n")
    with SupervisorProcess(home) as sup:
        sup.wait_log("ok in", task="fine")
        wait_for(lambda: sup.task_status("broken env")["state"] == "env-failed", timeout=60, what="env-failed")
        error = sup.task_status("broken env")["error"]
        assert "task 'broken env'" in error and "nonexistent-package-xyz" in error
        assert [r["outcome"] for r in sup.history("broken env")] == ["env-failed"]


def test_pip_installer_fallback_from_home_config(home: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "viapip", "3.1")
    (home / "taskautomation.ini").write_text("[Supervisor]\nInstaller = pip\n")
    write_task(
        home / "Tasks",
        "pip task",
        main="import viapip\n\ndef main():\n    return viapip.__version__\n",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
        requirements=f"--no-index\n--find-links {wheels}\nviapip==3.1\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("returned: 3.1", task="pip task", timeout=90)
        assert "installer pip" in sup.log()
    env = next(p for p in (home / "envs").iterdir() if p.is_dir())
    assert (env / "bin" / "pip").exists(), "the pip installer seeds pip into the env"


def test_names_with_spaces_and_non_ascii_letters(home: Path) -> None:
    write_task(
        home / "Tasks",
        "Mein Backup é",
        main="def main():\n    return 'ünïcode ok'\n",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("returned: ünïcode ok", task="Mein Backup é")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_segfault_is_logged_as_a_signal(home: Path, launcher: str) -> None:
    use_launcher(home, launcher)
    write_task(
        home / "Tasks",
        "segv",
        main="import os, signal\n\ndef main():\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("crashed in", task="segv")
        assert "killed by signal SIGSEGV" in sup.task_log("segv")
        run = sup.history("segv")[0]
    assert run["outcome"] == "crashed" and run["signal"] == "SIGSEGV"


def test_overlapping_due_run_is_skipped_and_recorded(home: Path) -> None:
    write_task(
        home / "Tasks",
        "slow",
        main="import time\n\ndef main():\n    time.sleep(4)\n    return 'slept'\n",
        config=EVERY_SECOND,
    )
    with SupervisorProcess(home) as sup:
        sup.wait_log("due run skipped", task="slow", timeout=30)
        sup.wait_log("returned: slept", task="slow", timeout=30)
        outcomes = [r["outcome"] for r in sup.history("slow")]
    assert "skipped" in outcomes and "ok" in outcomes


def test_terminate_without_supervisor_prints_one_line_and_exits_1(home: Path) -> None:
    result = script("terminate.py", home)
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "no supervisor is running" in lines[0]


def test_second_supervisor_on_same_home_is_refused(home: Path) -> None:
    with SupervisorProcess(home) as sup:
        second = script("main.py", home, timeout=30)
        assert second.returncode != 0
        assert "already running" in second.stderr and f"pid {sup.proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr


@pytest.mark.parametrize("how", ["terminate.py", "SIGTERM", "SIGINT"])
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_clean_stop_kills_running_children(home: Path, how: str, launcher: str) -> None:
    use_launcher(home, launcher)
    main = """
        import os, signal, subprocess, time
        def main():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # must still die after KillGraceSeconds
            child = subprocess.Popen(["sleep", "300"])
            open(os.path.join(os.environ["TASK_OUTPUT_DIR"], "pids"), "w").write(f"{os.getpid()} {child.pid}")
            time.sleep(300)
    """
    write_task(
        home / "Tasks",
        "stuck",
        main=main,
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n[Limits]\nKillGraceSeconds = 1\n",
    )
    sup = SupervisorProcess(home).start()
    try:
        pids_file = home / "Tasks" / "stuck" / "Output" / "pids"
        wait_for(pids_file.exists, timeout=30, what="the task's pids")
        if how == "terminate.py":
            result = script("terminate.py", home, timeout=60)
            assert result.returncode == 0, result.stderr
            # terminate.py returns only when the supervisor is gone.
            assert sup.proc.poll() is not None or sup.proc.wait(timeout=5) is not None
        else:
            sup.proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
        assert sup.proc.wait(timeout=30) == 0
    finally:
        sup.kill()
    from tests.support.harness import pids_alive

    assert pids_alive([int(p) for p in pids_file.read_text().split()]) == []
    log = sup.log()
    assert "supervisor stopped" in log and "1 killed" in log
    runs = sup.history("stuck")
    assert runs[0]["outcome"] == "killed"


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_initialize_calls_are_capped_and_all_tasks_load(home: Path, launcher: str) -> None:
    """Hundreds of tasks must not spawn hundreds of initialize() processes at once."""
    use_launcher(home, launcher)
    from tests.support.harness import InProcessSupervisor

    from supervisor.model import RunMode

    gate = home / "go"
    init = f"""
        import os, pathlib, time
        def initialize():
            pathlib.Path(os.environ["TASK_OUTPUT_DIR"], "init-started").write_text("x")
            while not pathlib.Path({str(gate)!r}).exists():
                time.sleep(0.01)
            return "initialized"
    """
    for n in range(9):
        write_task(home / "Tasks", f"t{n}", initialize=init)
    started = lambda: sum((home / "Tasks" / f"t{n}" / "Output" / "init-started").exists() for n in range(9))
    with InProcessSupervisor(home, watcher_factory=None, max_inits=3) as sup:
        wait_for(lambda: started() == 3, timeout=30, what="three initialize() calls running")
        states = {t["name"]: t["state"] for t in sup.supervisor.status()["tasks"]}
        assert sum(1 for a in sup.supervisor.launcher.in_flight.values() if a.mode is RunMode.INITIALIZE) == 3
        assert set(states.values()) == {"initializing"}
        gate.write_text("go")
        wait_for(
            lambda: all(t["state"] == "scheduled" for t in sup.supervisor.status()["tasks"]),
            timeout=60,
            what="all nine tasks loaded",
        )
        assert started() == 9


def test_empty_home_starts_and_says_how_to_add_a_task(home: Path) -> None:
    with SupervisorProcess(home) as sup:
        sup.wait_log("no task folders in")
        assert sup.status()["tasks"] == []
        write_task(home / "Tasks", "first", config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n")
        sup.wait_log("ok in", task="first")


def test_terminate_signals_the_proven_lock_holder_when_the_socket_is_gone(home: Path) -> None:
    write_task(home / "Tasks", "idle")
    sup = SupervisorProcess(home).start()
    try:
        sup.paths.control_socket.unlink()  # e.g. someone cleaned the state folder
        result = script("terminate.py", home, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"sending SIGTERM to pid {sup.proc.pid}" in result.stderr
        assert sup.proc.wait(timeout=30) == 0
    finally:
        sup.kill()
    assert "received SIGTERM" in sup.log()


def test_status_is_answered_from_the_snapshot_while_the_loop_is_busy(home: Path) -> None:
    """The control socket answers ``status`` on its own thread: a loop held inside a listener still gets the
    dashboard its answer, while requests that need the loop wait for it."""
    import threading

    from tests.support.harness import InProcessSupervisor

    from supervisor.errors import ControlError
    from supervisor.events import RescanRequested
    from supervisor.model import PhaseChanged
    from supervisor.service import control_server
    from supervisor.system.control import request

    held, release = threading.Event(), threading.Event()

    def hold_the_loop(fact: PhaseChanged) -> None:
        if fact.task == "slow":
            held.set()
            release.wait(timeout=60)

    write_task(home / "Tasks", "quick")
    with InProcessSupervisor(home, watcher_factory=None, move_listeners=[hold_the_loop]) as sup:
        server, status = control_server(sup.paths, sup.supervisor, logger=sup.logger)
        server.start()
        try:
            socket = sup.paths.control_socket

            def quick_state() -> str | None:
                tasks = request(socket, "status", timeout=5)["status"]["tasks"]
                return next((t["state"] for t in tasks if t["name"] == "quick"), None)

            wait_for(lambda: quick_state() == "scheduled", timeout=30, what="quick loaded")
            write_task(home / "Tasks", "slow")
            sup.supervisor.post(RescanRequested())
            assert held.wait(timeout=30), "the loop reached the listener"
            reply = request(socket, "status", timeout=5)  # answered while the loop is held
            assert reply["ok"] and [t["name"] for t in reply["status"]["tasks"]] == ["quick"]
            with pytest.raises(ControlError, match="did not answer"):
                request(socket, "rescan", timeout=0.5)  # this one needs the loop
            release.set()
            wait_for(
                lambda: any(t["name"] == "slow" for t in request(socket, "status", timeout=5)["status"]["tasks"]),
                timeout=30,
                what="slow loaded once the loop goes on",
            )
        finally:
            release.set()
            server.stop()
            status.close()
