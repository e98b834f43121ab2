"""The file watcher: which events count (pure), the debounce arithmetic (pure), and the real thing.

The real-observer tests write real files into a tmp Tasks/ and wait on the callback with deadlines. Two
kinds of waits appear: waiting *for* a call (returns as soon as it happens) and, only to prove that a
burst produced exactly one call, a short bounded wait for the *absence* of a further call.

"Nothing happened" is proved without waiting: the watcher logs every event it judged relevant at DEBUG,
and inotify delivers events in order, so after the ignored writes the test makes one relevant sentinel
write, waits for its call, and checks that the sentinel is the only thing the watcher saw.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from tests.support.helpers import wait_for, write_task
from watchdog.observers.api import BaseObserver

from supervisor.discovery.coverage import Coverage, check_coverage, watched_inodes_from_fdinfo
from supervisor.discovery.watcher import Debouncer, TaskWatcher, is_relevant

REPO = Path(__file__).resolve().parent.parent

DEBOUNCE = 0.2


# -- is_relevant (pure) ----------------------------------------------------------------------------

TASKS = Path("/srv/home/Tasks")


def relevant(event_type: str, rel: str, dest_rel: str | None = None, *, is_directory: bool = False) -> bool:
    src = str(TASKS / rel) if rel else str(TASKS)
    dest = str(TASKS / dest_rel) if dest_rel is not None else None
    return is_relevant(event_type, src, dest, tasks_dir=TASKS, is_directory=is_directory)


@pytest.mark.parametrize("event_type", ["created", "modified", "deleted", "closed"])
@pytest.mark.parametrize("rel", ["a/main.py", "a/config.ini", "a/requirements.txt", "a/helpers/mod.py"])
def test_task_files_are_relevant(event_type: str, rel: str) -> None:
    assert relevant(event_type, rel)


@pytest.mark.parametrize("event_type", ["created", "deleted"])
@pytest.mark.parametrize("rel", ["a", "a/helpers", ""])
def test_folder_creation_and_deletion_are_relevant(event_type: str, rel: str) -> None:
    assert relevant(event_type, rel, is_directory=True)


@pytest.mark.parametrize("rel", ["a", "a/helpers", ""])
def test_folder_modified_is_noise(rel: str) -> None:
    assert not relevant("modified", rel, is_directory=True)


@pytest.mark.parametrize("event_type", ["opened", "closed_no_write", "some_future_type"])
def test_reads_and_unknown_types_are_noise(event_type: str) -> None:
    assert not relevant(event_type, "a/main.py")


@pytest.mark.parametrize("rel", ["a/main.py", "a/requirements.txt", "a/config.ini", "a/helpers/mod.py", "a"])
def test_a_mode_change_of_task_files_and_folders_is_relevant(rel: str) -> None:
    """chmod (IN_ATTRIB, watchdog's "attrib") turns an unreadable file readable without changing a byte."""
    assert relevant("attrib", rel, is_directory="." not in rel)


@pytest.mark.parametrize("rel", ["a/Output/result.csv", "a/Output", "a/__pycache__/m.pyc", "a/.main.py.swp"])
def test_a_mode_change_of_ignored_paths_is_noise(rel: str) -> None:
    assert not relevant("attrib", rel)


@pytest.mark.parametrize(
    "rel",
    [
        "a/Output",
        "a/Output/result.csv",
        "a/Output/deep/er/file.txt",  # the task's own output
        "a/__pycache__/main.cpython-311.pyc",
        "__pycache__/x.pyc",
        "a/main.pyc",
        "a/old.pyo",
        "a/.main.py.swp",
        "a/.#main.py",
        "a/.hidden",
        ".git/index",
        "a/.venv/lib/site.py",  # hidden
        "a/main.py~",
        "a/main.py.swp",
        "a/main.py.swx",
        "a/main.py.swo",
        "a/x.tmp",
        "a/4913",
        "a/#main.py#",
    ],
)
@pytest.mark.parametrize("event_type", ["created", "modified", "deleted", "closed"])
def test_ignored_paths(event_type: str, rel: str) -> None:
    assert not relevant(event_type, rel)


def test_output_only_ignored_as_a_tasks_folder() -> None:
    # Only Tasks/NAME/Output is the task's output; a task *named* Output, or a nested folder called
    # Output inside a helper package, is ordinary task content.
    assert relevant("created", "Output/main.py")
    assert relevant("modified", "a/pkg/Output/mod.py")


def test_paths_outside_tasks_dir_are_ignored() -> None:
    assert not is_relevant("created", "/srv/home/envs/x/bin/python", None, tasks_dir=TASKS, is_directory=False)
    assert not is_relevant("created", "/srv/home/TasksOther/a.py", None, tasks_dir=TASKS, is_directory=False)


def test_hidden_folders_above_tasks_dir_do_not_hide_it() -> None:
    tasks = Path("/home/u/.local/taskautomation/Tasks")
    assert is_relevant("modified", str(tasks / "a/main.py"), None, tasks_dir=tasks, is_directory=False)


@pytest.mark.parametrize(
    ("src", "dest", "expected"),
    [
        ("a/.main.py.tmp", "a/main.py", True),  # write-temp-then-rename save
        ("a/main.py", "a/main.py~", True),  # vim backup rename: main.py disappears
        ("a/main.py~", "a/.main.py.bak", False),  # both ends noise
        ("a/Output/x.tmp", "a/Output/x.csv", False),  # a task finishing its own output
        ("a/Output/x.csv", "a/x.csv", True),  # moved out of Output into the task
        ("a", "b", True),  # task folder renamed
    ],
)
def test_moves_count_when_either_end_counts(src: str, dest: str, expected: bool) -> None:
    assert relevant("moved", src, dest, is_directory=False) is expected


def test_moves_with_an_unknown_end() -> None:
    # watchdog's "full events" mode reports a move into or out of the watched tree with one end empty.
    assert is_relevant("moved", str(TASKS / "a/main.py"), "", tasks_dir=TASKS, is_directory=False)
    assert not is_relevant("moved", str(TASKS / "a/.main.py.swp"), "", tasks_dir=TASKS, is_directory=False)
    assert not is_relevant("moved", str(TASKS / "a/.main.py.swp"), None, tasks_dir=TASKS, is_directory=False)
    assert is_relevant("moved", "/elsewhere/main.py", str(TASKS / "a/main.py"), tasks_dir=TASKS, is_directory=False)


# -- Debouncer (pure, fake times) ------------------------------------------------------------------


def test_debouncer_idle_has_no_due_time() -> None:
    debouncer = Debouncer(quiet_s=1.0, max_delay_s=10.0)
    assert debouncer.due_at() is None  # the worker then waits without a timeout
    assert not debouncer.take_if_due(1e9)


def test_debouncer_is_trailing_edge() -> None:
    debouncer = Debouncer(quiet_s=1.0, max_delay_s=10.0)
    for t in (100.0, 100.3, 100.6, 100.9):
        debouncer.note(t)
    assert debouncer.due_at() == pytest.approx(101.9)
    assert not debouncer.take_if_due(101.8)
    assert debouncer.take_if_due(101.9)
    assert debouncer.due_at() is None  # taken: a new event starts a new burst
    debouncer.note(200.0)
    assert debouncer.due_at() == pytest.approx(201.0)


def test_debouncer_ceiling_for_a_burst_that_never_goes_quiet() -> None:
    debouncer = Debouncer(quiet_s=1.0, max_delay_s=3.0)
    t = 50.0
    while t < 60.0 and not debouncer.take_if_due(t):
        debouncer.note(t)
        t += 0.5
    assert t == pytest.approx(53.0)


# -- the real watcher ------------------------------------------------------------------------------


class Calls:
    """Counts on_change calls and lets the test wait for a count with a deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.times: list[float] = []
        self.threads: set[str] = set()

    def __call__(self) -> None:
        with self._cond:
            self.times.append(time.monotonic())
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return len(self.times)

    def wait_count(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.times) >= n, timeout)


class Seen(logging.Handler):
    """Collects the watcher's DEBUG "change hint" lines: what it judged relevant, in order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.hints: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("change hint: "):
            self.hints.append(message[len("change hint: ") :])
        if record.levelno >= logging.WARNING:
            self.warnings.append(message)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def make_watcher(home: Path, seen: Seen, request: pytest.FixtureRequest) -> Iterator[Callable[..., TaskWatcher]]:
    """Build and start watchers on HOME/Tasks; every one is stopped at teardown."""
    logger = logging.getLogger(f"test.watcher.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(seen)
    logger.propagate = False
    made: list[TaskWatcher] = []

    def make(calls: Callable[[], None], *, tasks_dir: Path | None = None, **kwargs: object) -> TaskWatcher:
        kwargs.setdefault("debounce_s", DEBOUNCE)
        watcher = TaskWatcher(tasks_dir or home / "Tasks", calls, logger=logger, **kwargs)  # type: ignore[arg-type]
        made.append(watcher)
        watcher.start()
        return watcher

    yield make
    for watcher in made:
        watcher.stop()
    logger.removeHandler(seen)


def assert_no_further_call(calls: Calls, expected: int, *, debounce: float = DEBOUNCE) -> None:
    """The one bounded wait for an absence: a second call would come within one debounce period."""
    assert not calls.wait_count(expected + 1, timeout=debounce * 3), f"more than {expected} call(s)"
    assert calls.count == expected


def test_native_observer_is_used(make_watcher: Callable[..., TaskWatcher]) -> None:
    watcher = make_watcher(Calls())
    assert watcher.mode == "inotify"


def test_file_created_in_a_task_folder_gives_one_call(home: Path, make_watcher, seen: Seen) -> None:
    write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls)
    (home / "Tasks/a/helper.py").write_text("X = 1\n")
    assert calls.wait_count(1, timeout=10)
    assert_no_further_call(calls, 1)
    assert calls.threads == {"taskautomation-watcher"}
    assert any("helper.py" in hint for hint in seen.hints)


@pytest.mark.timeout(30)
def test_a_burst_gives_exactly_one_call_after_it(home: Path, make_watcher, tmp_path: Path) -> None:
    debounce = 0.5
    write_task(home / "Tasks", "a")
    sources = tmp_path / "src"
    sources.mkdir()
    for i in range(5):
        (sources / f"m{i}.py").write_text(f"V = {i}\n")
    calls = Calls()
    make_watcher(calls, debounce_s=debounce)
    last_write = 0.0
    for i in range(5):
        shutil.copy(sources / f"m{i}.py", home / "Tasks/a" / f"m{i}.py")
        last_write = time.monotonic()
        time.sleep(0.1)  # the stimulus: a user copying files one by one, not synchronisation
    assert calls.wait_count(1, timeout=10)
    # Trailing edge: the call waits for the burst to go quiet (load can only make it later).
    assert calls.times[0] >= last_write + debounce * 0.9
    assert_no_further_call(calls, 1, debounce=debounce)


def test_writes_in_output_and_pycache_are_ignored(home: Path, make_watcher, seen: Seen) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls)
    (task / "Output/result.csv").write_text("1,2\n")
    (task / "Output/run1").mkdir()
    (task / "Output/run1/log.txt").write_text("x")
    shutil.rmtree(task / "Output")
    (task / "Output").mkdir()
    (task / "__pycache__").mkdir()
    (task / "__pycache__/main.cpython-311.pyc").write_bytes(b"\0" * 16)
    (task / "main.pyc").write_bytes(b"\0")
    (task / "sentinel.py").write_text("")  # the one relevant write, after all of the above
    assert calls.wait_count(1, timeout=10)
    assert seen.hints and all("sentinel.py" in hint for hint in seen.hints), seen.hints
    assert_no_further_call(calls, 1)


def test_reading_task_files_is_ignored(home: Path, make_watcher, seen: Seen) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls)
    for _ in range(3):  # what a scan and a run do: open, read, close without writing
        (task / "main.py").read_text()
        (task / "config.ini").read_bytes()
        os.listdir(task)
    (home / "Tasks/sentinel").mkdir()
    assert calls.wait_count(1, timeout=10)
    assert seen.hints and all("sentinel" in hint for hint in seen.hints), seen.hints
    assert_no_further_call(calls, 1)


def test_atomic_save_gives_one_call(home: Path, make_watcher, seen: Seen) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls)
    (task / ".main.py.tmp").write_text("def main():\n    return 'new'\n")
    os.replace(task / ".main.py.tmp", task / "main.py")
    assert calls.wait_count(1, timeout=10)
    assert_no_further_call(calls, 1)
    assert seen.hints == [f"moved {task / '.main.py.tmp'} -> {task / 'main.py'}"]


def test_vim_style_save_gives_one_call(home: Path, make_watcher) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls)
    swap = task / ".main.py.swp"
    swap.write_bytes(b"b0VIM")  # swap file while editing
    probe = task / "4913"  # "may I create files here?"
    probe.write_bytes(b"")
    probe.unlink()
    os.rename(task / "main.py", task / "main.py~")  # backup, then write the new file in place
    (task / "main.py").write_text("def main():\n    return 'edited'\n")
    (task / "main.py~").unlink()
    swap.unlink()
    assert calls.wait_count(1, timeout=10)
    assert_no_further_call(calls, 1)


def test_deleting_a_task_folder_gives_a_call(home: Path, make_watcher, seen: Seen) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls)
    shutil.rmtree(task)
    assert calls.wait_count(1, timeout=10)
    assert any(hint == f"deleted {task}" for hint in seen.hints), seen.hints


def test_a_new_task_folder_is_watched_inside(home: Path, make_watcher) -> None:
    calls = Calls()
    make_watcher(calls)
    write_task(home / "Tasks", "new")
    assert calls.wait_count(1, timeout=10)
    assert_no_further_call(calls, 1)
    (home / "Tasks/new/config.ini").write_text("[Frequency]\nEveryXMinutes = 5\n")
    assert calls.wait_count(2, timeout=10)


def test_a_stream_that_never_goes_quiet_still_gives_calls(home: Path, make_watcher) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()
    make_watcher(calls, debounce_s=0.3, max_delay_s=0.6)
    deadline = time.monotonic() + 10
    with open(task / "chatty.txt", "w") as chatty:  # a file rewritten more often than the debounce
        while calls.count == 0 and time.monotonic() < deadline:
            chatty.write("x")
            chatty.flush()
            time.sleep(0.05)  # the stimulus, not synchronisation
    assert calls.count >= 1, "no call while events kept coming"


def test_callback_errors_are_logged_and_watching_continues(home: Path, make_watcher, seen: Seen) -> None:
    task = write_task(home / "Tasks", "a")
    calls = Calls()

    def flaky() -> None:
        calls()
        if calls.count == 1:
            raise RuntimeError("loop queue closed")

    make_watcher(flaky)
    (task / "one.py").write_text("")
    assert calls.wait_count(1, timeout=10)
    (task / "two.py").write_text("")
    assert calls.wait_count(2, timeout=10)


class RefusingObserverFactory:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    def __call__(self) -> BaseObserver:
        self.calls += 1
        raise self.exc


def test_fallback_to_polling_when_the_observer_cannot_start(make_watcher, seen: Seen) -> None:
    factory = RefusingObserverFactory(OSError(errno.ENOSPC, "inotify watch limit reached"))
    calls = Calls()
    watcher = make_watcher(calls, fallback_poll_s=0.1, observer_factory=factory)
    assert factory.calls == 1
    assert watcher.mode == "polling"
    assert calls.wait_count(3, timeout=10)
    assert any("inotify watch limit reached" in w and "max_user_watches" in w for w in seen.warnings), seen.warnings


def test_fallback_when_schedule_fails_after_the_observer_exists(home: Path, make_watcher, seen: Seen) -> None:
    # The observer's constructor already started a thread (InotifyObserver does); the failed start must
    # not leak it. The leak check is the thread comparison.
    before = set(threading.enumerate())
    from watchdog.observers import Observer

    class FailingSchedule(Observer):  # type: ignore[misc, valid-type]
        def schedule(self, *args: object, **kwargs: object):  # type: ignore[override]
            raise OSError(errno.EMFILE, "inotify instance limit reached")

    calls = Calls()
    watcher = make_watcher(calls, fallback_poll_s=0.1, observer_factory=FailingSchedule)
    assert watcher.mode == "polling"
    assert calls.wait_count(1, timeout=10)
    assert any("max_user_instances" in w for w in seen.warnings), seen.warnings
    watcher.stop()
    assert set(threading.enumerate()) - before == set()


def test_fallback_when_tasks_dir_is_missing(home: Path, make_watcher, seen: Seen) -> None:
    missing = home / "NoSuchTasks"
    calls = Calls()
    watcher = make_watcher(calls, tasks_dir=missing, fallback_poll_s=0.1)
    assert watcher.mode == "polling"
    assert calls.wait_count(2, timeout=10)
    assert any(str(missing) in w for w in seen.warnings), seen.warnings


def test_tasks_dir_deleted_while_watched_falls_back_to_polling(home: Path, make_watcher, seen: Seen) -> None:
    write_task(home / "Tasks", "a")
    calls = Calls()
    watcher = make_watcher(calls, fallback_poll_s=0.1)
    assert watcher.mode == "inotify"
    shutil.rmtree(home / "Tasks")
    wait_for(lambda: watcher.mode == "polling", timeout=10, what="fallback after Tasks/ was deleted")
    assert calls.wait_count(3, timeout=10)  # the deletion itself, then polling
    assert any("was deleted" in w for w in seen.warnings), seen.warnings


def test_stop_joins_every_thread_and_is_idempotent(home: Path) -> None:
    write_task(home / "Tasks", "a")
    before = set(threading.enumerate())
    calls = Calls()
    watcher = TaskWatcher(home / "Tasks", calls, debounce_s=DEBOUNCE)
    watcher.start()
    (home / "Tasks/a/x.py").write_text("")
    assert calls.wait_count(1, timeout=10)
    started = set(threading.enumerate()) - before
    assert any(t.name == "taskautomation-watcher" for t in started)
    t0 = time.monotonic()
    watcher.stop()
    assert time.monotonic() - t0 < 2.0  # the documented bound, not a benchmark
    assert set(threading.enumerate()) - before == set()
    assert watcher.mode == "stopped"
    watcher.stop()  # idempotent
    with pytest.raises(RuntimeError, match="already started"):
        watcher.start()


def test_stop_from_inside_the_callback(home: Path) -> None:
    write_task(home / "Tasks", "a")
    before = set(threading.enumerate())
    done = threading.Event()
    holder: list[TaskWatcher] = []

    def stop_self() -> None:
        holder[0].stop()
        done.set()

    watcher = TaskWatcher(home / "Tasks", stop_self, debounce_s=DEBOUNCE)
    holder.append(watcher)
    watcher.start()
    (home / "Tasks/a/x.py").write_text("")
    assert done.wait(10)
    wait_for(lambda: not (set(threading.enumerate()) - before), timeout=5, what="watcher threads to end")
    assert watcher.mode == "stopped"


def test_pending_call_is_dropped_by_stop(home: Path) -> None:
    write_task(home / "Tasks", "a")
    calls = Calls()
    seen_event = threading.Event()

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("change hint"):
                seen_event.set()

    logger = logging.getLogger("test.watcher.pending")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    flag = Flag()
    logger.addHandler(flag)
    try:
        watcher = TaskWatcher(home / "Tasks", calls, debounce_s=30.0, logger=logger)
        watcher.start()
        (home / "Tasks/a/x.py").write_text("")
        assert seen_event.wait(10)  # the event is pending, due in 30 s
        watcher.stop()
        assert calls.count == 0
    finally:
        logger.removeHandler(flag)


def test_invalid_arguments_name_the_folder(home: Path) -> None:
    with pytest.raises(ValueError, match="Tasks.*debounce_s"):
        TaskWatcher(home / "Tasks", lambda: None, debounce_s=-1)
    with pytest.raises(ValueError, match="Tasks.*fallback_poll_s"):
        TaskWatcher(home / "Tasks", lambda: None, fallback_poll_s=0)


# -- coverage: every folder really watched (the kernel's list of watches), symlink loops ------------------


def test_watched_inodes_are_read_from_fdinfo_text() -> None:
    text = (
        "pos:\t0\nflags:\t02004000\nmnt_id:\t15\nino:\t1057\n"
        "inotify wd:2 ino:1a2b sdev:800021 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a\n"
        "inotify wd:1 ino:10 sdev:800021 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:10\n"
    )
    assert watched_inodes_from_fdinfo(text) == {0x1A2B, 0x10}


def test_a_real_observer_watches_every_folder(home: Path, make_watcher) -> None:
    (write_task(home / "Tasks", "a") / "pkg" / "sub").mkdir(parents=True)
    watcher = make_watcher(Calls())
    assert watcher.mode == "inotify"
    found = check_coverage(home / "Tasks")
    assert found.known and found.folders >= 5 and found.unwatched == ()


def test_unwatched_folders_at_start_mean_polling(home: Path, make_watcher, seen: Seen) -> None:
    gap = Coverage(known=True, folders=3, unwatched=(str(home / "Tasks" / "a"),), loops=())
    calls = Calls()
    watcher = make_watcher(calls, fallback_poll_s=0.1, coverage=lambda _tasks: gap)
    assert watcher.mode == "polling"
    assert calls.wait_count(2, timeout=10)
    assert any(
        "1 of 3 folders are not watched" in w and "polling" in w and "max_user_watches" in w for w in seen.warnings
    ), seen.warnings


def test_a_folder_left_unwatched_after_a_change_means_polling(home: Path, make_watcher, seen: Seen) -> None:
    results = [Coverage(known=True, folders=1, unwatched=(), loops=())]
    calls = Calls()
    watcher = make_watcher(calls, fallback_poll_s=0.1, coverage=lambda _tasks: results[-1])
    assert watcher.mode == "inotify"
    results.append(Coverage(known=True, folders=2, unwatched=(str(home / "Tasks" / "b"),), loops=()))
    write_task(home / "Tasks", "b")
    wait_for(lambda: watcher.mode == "polling", timeout=10, what="fallback after an unwatched folder appeared")
    assert calls.wait_count(3, timeout=10)
    assert any("stopped watching" in w and "polling" in w for w in seen.warnings), seen.warnings


def test_symlink_loops_are_reported_once_and_not_followed(home: Path, make_watcher, seen: Seen) -> None:
    folder = write_task(home / "Tasks", "a")
    (folder / "up").symlink_to(folder)
    (home / "Tasks" / "self").symlink_to(home / "Tasks" / "self")
    calls = Calls()
    watcher = make_watcher(calls)
    assert watcher.mode == "inotify"
    (folder / "main.py").write_text("def main():\n    return 1\n")
    assert calls.wait_count(1, timeout=10)
    loops = [w for w in seen.warnings if "symlink loop" in w]
    assert sorted(loops) == sorted(
        f"{p} is a symlink loop (it leads back to itself or a folder containing it); not followed"
        for p in (folder / "up", home / "Tasks" / "self")
    ), seen.warnings


_NAMESPACED_WATCHER = """
import logging, sys, time
from pathlib import Path
from supervisor.discovery.watcher import TaskWatcher
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
watcher = TaskWatcher(Path(sys.argv[1]), lambda: None, fallback_poll_s=0.2)
watcher.start()
print("MODE", watcher.mode, flush=True)
watcher.stop()
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_real_inotify_watch_limit_means_polling(home: Path) -> None:
    """A real ENOSPC from the kernel, without touching the machine's limit: a new user namespace has its
    own ``max_inotify_watches``, lowered to 4 inside it while the tree needs more."""
    for name in ("a", "b", "c"):
        (write_task(home / "Tasks", name) / "pkg").mkdir()
    script = 'echo 4 > /proc/sys/user/max_inotify_watches || exit 97; exec "$@"'
    result = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            script,
            "sh",
            sys.executable,
            "-c",
            _NAMESPACED_WATCHER,
            str(home / "Tasks"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 97 or "Operation not permitted" in result.stderr:
        pytest.skip(f"user namespaces with their own inotify limits are not available: {result.stderr[-300:]}")
    assert "MODE polling" in result.stdout, result.stdout + result.stderr
    assert "folders are not watched" in result.stdout and "watching" not in result.stdout.split("MODE")[0].replace(
        "stopped watching", ""
    ).replace("cannot watch", ""), result.stdout
