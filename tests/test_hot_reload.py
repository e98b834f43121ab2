"""Hot reload end to end: a real supervisor, the real inotify watcher, real files edited under it.

Every test writes ``WatchDebounceSeconds = 0.3`` into the home so a reload takes a fraction of a second.

Counting reloads needs a point after which no reload can still be on its way. :func:`barrier` gives one
without sleeping: it creates an empty folder in ``Tasks/`` and waits until the supervisor reports it, then
removes it and waits for that too. Watch events arrive in order and a rescan reads the disk as it is, so
once the first report is logged every edit made before the barrier has been rescanned; the second report
comes from a later loop turn, so everything that first rescan did (log lines, initialize() launches) has
been written by then.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
from tests.support.harness import InProcessSupervisor, SupervisorProcess, cli
from tests.support.helpers import build_wheel, wait_for, write_task

from supervisor.discovery.watcher import TaskWatcher
from supervisor.envs.manager import EnvManager
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(180)

DEBOUNCE_INI = "[Supervisor]\nWatchDebounceSeconds = 0.3\n"
HOURLY = "[Frequency]\nEveryXMinutes = 60\n"
HOURLY_STARTUP = HOURLY + "[Global]\nRunOnStartup = True\n"
EVERY_1_2_S = "[Frequency]\nEveryXMinutes = 0.02\n"
INIT_STARTED = re.compile(r"\[init \S+\] started")

_barriers = itertools.count(1)


@pytest.fixture
def fast_home(home: Path) -> Path:
    """A home whose supervisor rescans 0.3 s after the last change."""
    (home / "taskautomation.ini").write_text(DEBOUNCE_INI)
    return home


def barrier(sup: SupervisorProcess) -> None:
    """Return once every change made to Tasks/ before the call has been rescanned and fully handled."""
    name = f"zz-barrier-{next(_barriers)}"
    folder = sup.home / "Tasks" / name
    folder.mkdir()
    sup.wait_log(f"task {name!r}: {folder}: incomplete")
    folder.rmdir()
    sup.wait_log(f"task {name!r}: folder removed")


def inits_started(sup: SupervisorProcess, task: str) -> int:
    return len(INIT_STARTED.findall(sup.task_log(task)))


def outcomes(sup: SupervisorProcess, task: str) -> list[str]:
    return [run["outcome"] for run in sup.history(task)]


def run_now(sup: SupervisorProcess, task: str) -> None:
    result = cli(sup.home, "run-now", task)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------------
# 1. a folder copied in file by file
# --------------------------------------------------------------------------------------------------------


def test_folder_copied_in_file_by_file_is_loaded_once(fast_home: Path) -> None:
    tasks = fast_home / "Tasks"
    # RunOnStartup applies regardless of the window: give it a one-minute window two hours away.
    away = (datetime.now() + timedelta(hours=2)).strftime("%H:%M")
    startup_config = (
        f"[Frequency]\nEveryXMinutes = 60\nAllowedFrom = {away}\nAllowedTo = {away}\n[Global]\nRunOnStartup = True\n"
    )
    with SupervisorProcess(fast_home) as sup:
        for name in ("copied", "plain"):
            (tasks / name).mkdir()
            (tasks / name / "main.py").write_text(COPIED_MAIN.format(name=name))
        # The supervisor saw the half-copied folders and waits for them to be complete.
        for name in ("copied", "plain"):
            sup.wait_log(f"task {name!r}: {tasks / name}: incomplete, config.ini missing")
        (tasks / "copied" / "config.ini").write_text(startup_config)
        (tasks / "plain" / "config.ini").write_text(HOURLY)
        # Complete now: the env is built and initialize() starts; it waits for Output/go, so the last file
        # of the copy lands while it runs, the most delicate moment for a second load.
        for name in ("copied", "plain"):
            wait_for(lambda: inits_started(sup, name) == 1, timeout=60, what=f"initialize() of {name}")
            (tasks / name / "requirements.txt").write_text("# nothing to install\n")
        barrier(sup)
        for name in ("copied", "plain"):
            (tasks / name / "Output").mkdir()
            (tasks / name / "Output" / "go").touch()
        sup.wait_log("returned: ran copied", task="copied")
        sup.wait_log("returned: ran plain", task="plain")
        barrier(sup)
        log = sup.log()
        for name in ("copied", "plain"):
            assert sup.task_log(name).count("initialize(): ready " + name) == 1
            assert inits_started(sup, name) == 1
            assert log.count(f"task {name!r}: loaded:") == 1
            assert f"task {name!r}: config reloaded" not in log
        # Both tasks need the same (empty) env: it is built once, for whichever task asked first.
        assert log.count(": building env ") == 1
        copied, plain = sup.history("copied"), sup.history("plain")
    assert [(r["trigger"], r["outcome"]) for r in copied] == [("startup", "ok")]
    # Without RunOnStartup a task that never ran is due at once inside its window (all day here).
    assert [(r["trigger"], r["outcome"]) for r in plain] == [("schedule", "ok")]


COPIED_MAIN = """
import os, time

def main():
    return "ran {name}"

def initialize():
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(os.environ["TASK_OUTPUT_DIR"], "go")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "ready {name}"
"""


# --------------------------------------------------------------------------------------------------------
# 2. code edits: main.py and a helper module
# --------------------------------------------------------------------------------------------------------

CODE = """
from Tasks.coder import helper

def main():
    return "main {version} " + helper.VALUE

def initialize():
    return "init {version} " + helper.VALUE
"""


def test_code_edits_reinitialize_and_the_next_run_uses_the_new_code(fast_home: Path) -> None:
    folder = write_task(
        fast_home / "Tasks",
        "coder",
        main=CODE.format(version="v1"),
        initialize=None,
        config=HOURLY_STARTUP,
        extra={"helper.py": "VALUE = 'h1'\n"},
    )
    with SupervisorProcess(fast_home) as sup:
        sup.wait_log("returned: main v1 h1", task="coder")

        (folder / "main.py").write_text(CODE.format(version="v2"))
        sup.wait_log("initialize(): init v2 h1", task="coder")
        run_now(sup, "coder")
        sup.wait_log("returned: main v2 h1", task="coder")

        (folder / "helper.py").write_text("VALUE = 'h2'\n")
        sup.wait_log("initialize(): init v2 h2", task="coder")
        run_now(sup, "coder")
        sup.wait_log("returned: main v2 h2", task="coder")
        barrier(sup)
        assert sup.log().count("task 'coder': code changed: initialize() again") == 2
        assert inits_started(sup, "coder") == 3
        runs = sup.history("coder")
    # Editing a loaded task does not apply RunOnStartup again; the task stayed loaded throughout.
    assert [r["trigger"] for r in reversed(runs)] == ["startup", "manual", "manual"]
    assert [r["message"] for r in reversed(runs)] == ["main v1 h1", "main v2 h1", "main v2 h2"]
    assert sup.log().count("task 'coder': loaded:") == 1


# --------------------------------------------------------------------------------------------------------
# 3. config edit: new interval, the run in flight is not interrupted
# --------------------------------------------------------------------------------------------------------

GATED_FIRST_RUN = """
import os, time

def main():
    out = os.environ["TASK_OUTPUT_DIR"]
    first = not os.path.exists(os.path.join(out, "started"))
    open(os.path.join(out, "started"), "a").write("x")
    if first:  # hold the first run until the test has seen the config reload
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(out, "release")) and time.monotonic() < deadline:
            time.sleep(0.05)
    return "first" if first else "later"
"""


def test_config_edit_applies_new_interval_without_interrupting_the_run(fast_home: Path) -> None:
    folder = write_task(fast_home / "Tasks", "slowpoke", main=GATED_FIRST_RUN, config=HOURLY_STARTUP)
    output = folder / "Output"
    with SupervisorProcess(fast_home) as sup:
        wait_for((output / "started").exists, timeout=60, what="the first run to start")
        (folder / "config.ini").write_text(EVERY_1_2_S + "[Global]\nRunOnStartup = True\n")
        sup.wait_log("task 'slowpoke': config reloaded")
        assert sup.task_status("slowpoke")["state"] == "running"
        (output / "release").touch()
        sup.wait_log("returned: first", task="slowpoke")
        sup.wait_log("returned: later", task="slowpoke", count=2)
        runs = list(reversed(sup.history("slowpoke")))
    first = runs[0]
    assert (first["trigger"], first["outcome"], first["message"]) == ("startup", "ok", "first")
    later = [r for r in runs[1:] if r["outcome"] == "ok"]
    assert len(later) >= 2 and all(r["trigger"] == "schedule" and r["message"] == "later" for r in later)
    # Due slots that came while the held run was still going were skipped, nothing else.
    assert {r["outcome"] for r in runs} <= {"ok", "skipped"}
    assert sum(r["trigger"] == "startup" for r in runs) == 1


# --------------------------------------------------------------------------------------------------------
# 4. Enabled toggle
# --------------------------------------------------------------------------------------------------------


def test_enabled_toggle_unschedules_and_reschedules_with_run_on_startup(fast_home: Path) -> None:
    tasks = fast_home / "Tasks"
    folder = write_task(tasks, "toggled", config=EVERY_1_2_S + "[Global]\nRunOnStartup = True\n")
    write_task(tasks, "witness", config=EVERY_1_2_S)
    with SupervisorProcess(fast_home) as sup:
        sup.wait_log("ok in", task="toggled", count=2)
        (folder / "config.ini").write_text(EVERY_1_2_S + "[Global]\nEnabled = False\nRunOnStartup = True\n")
        sup.wait_log("task 'toggled': disabled (Enabled=False)")
        # A run in flight at that moment may finish; then the task is just disabled.
        wait_for(lambda: sup.task_status("toggled")["state"] == "disabled", timeout=30, what="toggled disabled")
        status = sup.task_status("toggled")
        assert status["enabled"] is False and status["next_run"] is None
        runs_when_disabled = len(sup.history("toggled"))
        # Let the 1.2 s interval pass three times over, measured by the witness task's own runs.
        witnessed = sup.task_log("witness").count("ok in")
        sup.wait_log("ok in", task="witness", count=witnessed + 3)
        assert len(sup.history("toggled")) == runs_when_disabled

        (folder / "config.ini").write_text(EVERY_1_2_S + "[Global]\nEnabled = True\nRunOnStartup = True\n")
        sup.wait_log("task 'toggled': loaded:", count=2)
        wait_for(
            lambda: [r["trigger"] for r in sup.history("toggled")].count("startup") == 2,
            timeout=30,
            what="a second RunOnStartup run after re-enabling",
        )
        sup.wait_log("ok in", task="toggled", count=runs_when_disabled + 2)
        assert sup.task_status("toggled")["state"] in ("scheduled", "running")
        assert set(outcomes(sup, "toggled")) <= {"ok", "skipped"}


# --------------------------------------------------------------------------------------------------------
# 5. folder deleted during a run
# --------------------------------------------------------------------------------------------------------


def test_folder_deleted_during_a_run_lets_the_run_finish(fast_home: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    main = f"""
        import os, time

        def main():
            open({str(gate / "started")!r}, "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists({str(gate / "release")!r}) and time.monotonic() < deadline:
                time.sleep(0.05)
            return "finished after removal"
    """
    tasks = fast_home / "Tasks"
    write_task(tasks, "doomed", main=main, config=HOURLY_STARTUP)
    write_task(tasks, "bystander", config=EVERY_1_2_S)
    with SupervisorProcess(fast_home) as sup:
        wait_for((gate / "started").exists, timeout=60, what="the doomed run to start")
        shutil.rmtree(tasks / "doomed")
        sup.wait_log("task 'doomed': folder removed; unscheduled; its run in flight may finish within its timeout")
        assert "doomed" not in [t["name"] for t in sup.status()["tasks"]]
        (gate / "release").touch()
        done = wait_for(
            lambda: re.search(r"task 'doomed': run \S+ (\S+) in", sup.log()), timeout=30, what="the doomed run to end"
        )
        assert done.group(1) == "ok"
        bystanders = sup.task_log("bystander").count("ok in")
        sup.wait_log("ok in", task="bystander", count=bystanders + 2)
        assert "doomed" not in [t["name"] for t in sup.status()["tasks"]]
        history = sup.history("doomed")
        assert sup.proc is not None and sup.proc.poll() is None
    assert [(r["outcome"], r["message"]) for r in history] == [("ok", "finished after removal")]
    assert "Traceback" not in sup.log()


# --------------------------------------------------------------------------------------------------------
# 6. broken config or code, then fixed
# --------------------------------------------------------------------------------------------------------


def test_broken_config_and_code_are_reported_once_and_fixing_reloads(fast_home: Path) -> None:
    folder = write_task(fast_home / "Tasks", "fragile", config=HOURLY_STARTUP)
    config = folder / "config.ini"
    config_error = f"task 'fragile': {config}: line 2: cannot parse 'EveryXMinutes 60': expected 'Key = value'"
    syntax_error = f"task 'fragile': {folder / 'main.py'}: line 1: "
    with SupervisorProcess(fast_home) as sup:
        sup.wait_log("ok in", task="fragile")

        config.write_text("[Frequency]\nEveryXMinutes 60\n[Global]\nRunOnStartup = True\n")
        sup.wait_log(config_error)
        status = sup.task_status("fragile")
        assert status["state"] == "error" and status["next_run"] is None and status["error"] == config_error
        os.utime(config)  # a touch (same content) and unrelated rescans must not report it again
        barrier(sup)
        assert sup.log().count(config_error) == 1

        config.write_text(HOURLY_STARTUP)  # fixed: broken -> loaded is a load, so RunOnStartup applies
        sup.wait_log("ok in", task="fragile", count=2)

        (folder / "main.py").write_text("def main(:\n    return 1\n")
        sup.wait_log(syntax_error)
        assert sup.task_status("fragile")["state"] == "error"
        barrier(sup)
        assert sup.log().count(syntax_error) == 1

        (folder / "main.py").write_text("def main():\n    return 'mended'\n")
        sup.wait_log("returned: mended", task="fragile")
        log = sup.log()
        runs = sup.history("fragile")
    assert log.count("task 'fragile': loaded:") == 3
    assert [(r["trigger"], r["outcome"]) for r in runs] == [("startup", "ok")] * 3


# --------------------------------------------------------------------------------------------------------
# 7. requirements change with runs in flight
# --------------------------------------------------------------------------------------------------------

VERSION_MAIN = """
import hrpkg

def main():
    return "version " + hrpkg.__version__

def initialize():
    return "init " + hrpkg.__version__
"""


def _requirements(wheels: Path, pin: str) -> str:
    return f"--no-index\n--find-links {wheels}\n{pin}\n"


def _env_key(home: Path, text: str, scratch: Path) -> str:
    """The key the supervisor will compute for requirements ``text`` (same interpreter, same installer)."""
    scratch.write_text(text)
    return EnvManager(Paths(home), logger=logging.getLogger("test.hot_reload")).key_for(
        scratch, task_dir=scratch.parent
    )


def test_requirements_change_switches_envs_without_a_failed_run(fast_home: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "hrpkg", "1.0")
    build_wheel(wheels, "hrpkg", "2.0")
    old_text, new_text = _requirements(wheels, "hrpkg==1.0"), _requirements(wheels, "hrpkg==2.0")
    bad_text = _requirements(wheels, "no-such-package-hr==9.9")
    old_key = _env_key(fast_home, old_text, tmp_path / "old.txt")
    new_key = _env_key(fast_home, new_text, tmp_path / "new.txt")
    folder = write_task(
        fast_home / "Tasks", "pinned", main=VERSION_MAIN, initialize=None, config=EVERY_1_2_S, requirements=old_text
    )
    with SupervisorProcess(fast_home) as sup:
        sup.wait_log("returned: version 1.0", task="pinned", count=2, timeout=60)
        assert (fast_home / "envs" / old_key).is_dir()

        # Hold the new env's build lock (the cross-process lock every builder takes), so "while the new env
        # builds" lasts exactly until the test has seen runs keep going on the old env.
        (fast_home / "envs").mkdir(exist_ok=True)
        lock_fd = os.open(fast_home / "envs" / f"{new_key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            (folder / "requirements.txt").write_text(new_text)
            sup.wait_log("task 'pinned': requirements changed; building a new env in the background")
            sup.wait_log(f"env {new_key}: task pinned waits for another builder")
            before = sup.task_log("pinned").count("returned: version 1.0")
            sup.wait_log("returned: version 1.0", task="pinned", count=before + 3)
            assert "version 2.0" not in sup.task_log("pinned")
        finally:
            os.close(lock_fd)
        sup.wait_log(f"task 'pinned': env {new_key} ready; switching from env {old_key}", timeout=60)
        sup.wait_log("initialize(): init 2.0", task="pinned", timeout=60)
        sup.wait_log("returned: version 2.0", task="pinned", count=2)
        # The old env is collected once no run uses it any more.
        wait_for(lambda: not (fast_home / "envs" / old_key).exists(), timeout=30, what="old env collected")
        assert re.search(rf"removed 1 unused env\(s\): {old_key}", sup.log())

        # A broken requirements.txt: the build fails loudly and the last good env keeps serving.
        (folder / "requirements.txt").write_text(bad_text)
        failure = wait_for(
            lambda: re.search(r"ERROR +(task 'pinned': cannot install .*)", sup.log()),
            timeout=60,
            what="the failed build to be logged",
        )
        assert "no-such-package-hr" in failure.group(1)
        sup.wait_log("The previous env keeps serving")
        served = sup.task_log("pinned").count("returned: version 2.0")
        sup.wait_log("returned: version 2.0", task="pinned", count=served + 2)
        status = sup.task_status("pinned")
        assert status["state"] in ("scheduled", "running")
        assert "still running on the previous env" in status["error"]
        assert (fast_home / "envs" / new_key).is_dir()
        runs = sup.history("pinned")
    assert {r["outcome"] for r in runs} <= {"ok", "skipped"}, [r for r in runs if r["outcome"] not in ("ok", "skipped")]
    versions = [r["message"] for r in reversed(runs) if r["outcome"] == "ok"]
    switch = versions.index("version 2.0")
    assert set(versions[:switch]) == {"version 1.0"} and set(versions[switch:]) == {"version 2.0"}
    assert sup.task_log("pinned").count("initialize(): init 2.0") == 1


# --------------------------------------------------------------------------------------------------------
# 8. editor save patterns
# --------------------------------------------------------------------------------------------------------


def _source(n: int) -> str:
    return f"def main():\n    return 'main {n}'\n\ndef initialize():\n    return 'init {n}'\n"


def test_each_editor_save_pattern_reloads_exactly_once(fast_home: Path) -> None:
    folder = write_task(fast_home / "Tasks", "edited", main=_source(0), initialize=None, config=HOURLY)
    main = folder / "main.py"
    with SupervisorProcess(fast_home) as sup:
        sup.wait_log("initialize(): init 0", task="edited")

        def saved(n: int) -> None:
            sup.wait_log(f"initialize(): init {n}", task="edited")
            barrier(sup)
            assert sup.log().count("task 'edited': code changed: initialize() again") == n
            assert inits_started(sup, "edited") == n + 1
            assert sup.task_log("edited").count("initialize(): init") == n + 1

        # Write a temp file, rename it over main.py (most IDEs, Python's atomic-save recipes).
        (folder / ".main.py.tmp").write_text(_source(1))
        os.replace(folder / ".main.py.tmp", main)
        saved(1)

        # vim: swap file, write probe 4913, move the original to a backup, write, drop backup and swap.
        (folder / ".main.py.swp").write_bytes(b"b0VIM 9.0\0" * 50)
        (folder / "4913").write_bytes(b"")
        (folder / "4913").unlink()
        os.rename(main, folder / "main.py~")
        main.write_text(_source(2))
        (folder / "main.py~").unlink()
        (folder / ".main.py.swp").unlink()
        saved(2)

        # sed -i: a temp file in the same folder renamed over main.py.
        subprocess.run(["sed", "-i", "s/ 2'/ 3'/", str(main)], check=True, timeout=30)
        saved(3)
        # main.py never looked missing to a rescan: the task was loaded once and never unloaded.
        assert sup.log().count("task 'edited': loaded:") == 1
        assert sup.task_status("edited")["state"] == "scheduled"


# --------------------------------------------------------------------------------------------------------
# 9. a task writing its Output/ causes no reload
# --------------------------------------------------------------------------------------------------------

WRITER = """
import os, py_compile, time
from Tasks.writer import helper

def main():
    out = os.environ["TASK_OUTPUT_DIR"]
    os.makedirs(os.path.join(out, "deep"), exist_ok=True)
    # Byte-code in the task folder, as an import does where PYTHONDONTWRITEBYTECODE is not set.
    py_compile.compile(helper.__file__, doraise=True)
    for i in range(30):
        with open(os.path.join(out, "tick.txt"), "a") as f:
            f.write(f"{i}\\n")
        open(os.path.join(out, "deep", f"file{i}.txt"), "w").write(str(i))
        time.sleep(0.1)
    return "wrote " + helper.WHAT

def initialize():
    return "writer ready"
"""


def test_writing_output_causes_no_reload(fast_home: Path) -> None:
    folder = write_task(
        fast_home / "Tasks",
        "writer",
        main=WRITER,
        initialize=None,
        config=HOURLY_STARTUP,
        extra={"helper.py": "WHAT = 'ticks'\n"},
    )
    with SupervisorProcess(fast_home) as sup:
        sup.wait_log("returned: wrote ticks", task="writer", timeout=60)
        barrier(sup)
        assert (folder / "__pycache__").is_dir() and len((folder / "Output" / "tick.txt").read_text().split()) == 30
        assert inits_started(sup, "writer") == 1
        log = sup.log()
        assert "task 'writer': code changed" not in log and "task 'writer': config reloaded" not in log
        assert log.count("task 'writer': loaded:") == 1


# --------------------------------------------------------------------------------------------------------
# 10. no inotify: polling fallback and the loop's safety-net rescan (in-process supervisor)
# --------------------------------------------------------------------------------------------------------


def _no_inotify() -> Any:
    raise OSError(errno.ENOSPC, "inotify watch limit reached")


def _wait_for_first_run(sup: InProcessSupervisor, task: str) -> None:
    log = sup.paths.task_log(task)
    wait_for(
        lambda: log.exists() and "returned: picked up" in log.read_text(),
        timeout=60,
        what=f"{task} to be picked up and run\n{sup.log()[-2000:]}",
    )


def test_polling_fallback_picks_up_a_new_task_without_inotify(home: Path) -> None:
    watchers: list[TaskWatcher] = []

    def watcher_factory(on_change: Callable[[], None]) -> TaskWatcher:
        watchers.append(
            TaskWatcher(home / "Tasks", on_change, debounce_s=0.3, fallback_poll_s=0.2, observer_factory=_no_inotify)
        )
        return watchers[0]

    with InProcessSupervisor(home, watcher_factory=watcher_factory) as sup:
        wait_for(lambda: "supervisor started" in sup.log(), timeout=30, what="supervisor start")
        assert watchers[0].mode == "polling"
        write_task(home / "Tasks", "late", main="def main():\n    return 'picked up'\n", config=HOURLY_STARTUP)
        _wait_for_first_run(sup, "late")


def test_safety_net_rescan_picks_up_a_task_without_any_watcher(home: Path) -> None:
    with InProcessSupervisor(home, watcher_factory=None, safety_rescan_s=0.5) as sup:
        wait_for(lambda: "supervisor started" in sup.log(), timeout=30, what="supervisor start")
        write_task(home / "Tasks", "unseen", main="def main():\n    return 'picked up'\n", config=HOURLY_STARTUP)
        _wait_for_first_run(sup, "unseen")
