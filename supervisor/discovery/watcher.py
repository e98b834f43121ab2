"""Turn file-system events under ``Tasks/`` into debounced "something changed, rescan" calls.

Policy ("reconcile, don't react", docs/architecture.md): events are *hints*. This module never says what changed;
it calls ``on_change()`` once the relevant events have been quiet for ``debounce_s`` and the supervisor's
loop rescans ``Tasks/`` and diffs. Therefore:

- Losing precision is fine, losing a wake-up is not. When the native observer cannot run (inotify watch
  or instance limit, ``Tasks/`` missing, ``Tasks/`` deleted while watched) the watcher falls back to calling
  ``on_change()`` every ``fallback_poll_s``; the rescan is cheap and the diff finds real changes.
- A native observer that watches only part of the tree is no better than none: after starting and after
  every change it is checked against the kernel's own list of watches (:mod:`.watchcoverage`); a folder
  without a watch (the inotify watch limit reached, ENOSPC) is a warning and polling takes over. Symlink
  loops under ``Tasks/`` are reported once each (nothing follows them).
- Waking up for nothing is the other failure: every run of a task writes ``Output/`` and ``__pycache__/``,
  every scan opens files, editors write swap and probe files. :func:`is_relevant` drops all of that so an
  idle home leaves the watcher asleep (no periodic wake-ups at all outside polling mode).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable

import watchdog.events as wd_events
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from ..paths import is_task_content
from .coverage import Coverage, check_coverage

_LOG = logging.getLogger(__name__)
# Recent watchdog releases report IN_ATTRIB as its own event type; older ones as a file's "modified".
EVENT_TYPE_ATTRIB: str = getattr(wd_events, "EVENT_TYPE_ATTRIB", "attrib")


# stop() must return promptly even if a watchdog thread misbehaves; what is still alive then is logged.
_STOP_BUDGET_S = 1.5
# Without a ceiling a file rewritten more often than ``debounce_s`` (a log a task keeps next to main.py)
# would postpone the rescan forever and real edits would never be picked up.
_MAX_DELAY_FACTOR = 10.0

MODE_STOPPED = "stopped"
MODE_POLLING = "polling"


def is_relevant(event_type: str, src: str, dest: str | None, *, tasks_dir: Path, is_directory: bool) -> bool:
    """Whether one watchdog event under ``tasks_dir`` may change what the supervisor loads.

    Relevant: ``created``, ``deleted`` and ``moved`` of files and folders, ``modified`` and ``closed``
    (closed after a write; ``touch`` produces only that and an attrib event) of files, and ``attrib`` (a
    mode, owner or time change: inotify's IN_ATTRIB, which watchdog reports as its own type) of files and
    folders: ``chmod 644 requirements.txt`` makes an unreadable file readable without changing a byte, and
    the scan's hash of an unreadable file differs from its content's, so the rescan sees the change. A move
    counts when either end is relevant, so a write-temp-then-rename save (``.main.py.tmp`` -> ``main.py``)
    counts.

    Ignored: paths outside ``tasks_dir``; anything in a task's ``Output/`` (the folder itself too, tasks
    recreate it), in ``__pycache__/`` or in a hidden folder; hidden files (``.main.py.swp``, ``.#main.py``);
    ``*.pyc``/``*.pyo``; editor temp/backup files (``*~``, ``*.swp``, ``*.swo``, ``*.swx``, ``*.tmp``,
    ``#name#``, vim's ``4913`` probe); ``modified`` of a folder (its mtime moves whenever an entry does);
    ``opened`` and ``closed_no_write`` (reads: every run and every scan produce them; reading changes no
    attribute inotify reports); and event types this module does not know (watchdog has grown noise types
    before).
    """
    if event_type == EVENT_TYPE_MOVED:
        return _path_relevant(src, tasks_dir) or (bool(dest) and _path_relevant(dest or "", tasks_dir))
    if event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_DELETED):
        return _path_relevant(src, tasks_dir)
    if event_type in (EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED):
        return not is_directory and _path_relevant(src, tasks_dir)
    if event_type == EVENT_TYPE_ATTRIB:
        return _path_relevant(src, tasks_dir)
    return False


def _path_relevant(path: str, tasks_dir: Path) -> bool:
    """The path half of :func:`is_relevant`; only the part below ``tasks_dir`` is judged, so a home that
    itself lives in a hidden folder (``~/.local/taskautomation``) is still watched."""
    if not path:
        return False
    try:
        parts = PurePath(path).relative_to(tasks_dir).parts
    except ValueError:
        return False
    if not parts:
        return True  # Tasks/ itself created, deleted or moved: everything may have changed
    return is_task_content(parts)  # the rule discovery hashes by (paths.py)


@dataclass
class Debouncer:
    """Trailing-edge debounce with a ceiling, as arithmetic on times the caller passes in (no clock).

    A burst of events is due ``quiet_s`` after its last event; a burst that never goes quiet is due
    ``max_delay_s`` after its first event anyway. Once taken, the next event starts a new burst.
    """

    quiet_s: float
    max_delay_s: float
    _first: float | None = None
    _last: float | None = None

    def note(self, now: float) -> None:
        """Record one relevant event at monotonic time ``now``."""
        if self._first is None:
            self._first = now
        self._last = now

    def due_at(self) -> float | None:
        """When the pending burst is due, or None when nothing is pending (the caller may sleep forever)."""
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.quiet_s, self._first + self.max_delay_s)

    def take_if_due(self, now: float) -> bool:
        """True (and forget the burst) when a burst is pending and due at ``now``."""
        due = self.due_at()
        if due is None or now < due:
            return False
        self._first = self._last = None
        return True


class _EventSink(FileSystemEventHandler):
    """Hands every watchdog event to one callable; runs on watchdog's dispatcher thread."""

    def __init__(self, receive: Callable[[FileSystemEvent], None]) -> None:
        super().__init__()
        self._receive = receive

    def dispatch(self, event: FileSystemEvent) -> None:
        self._receive(event)


class TaskWatcher:
    """Watch ``tasks_dir`` recursively and call ``on_change()`` after relevant events go quiet.

    ``on_change`` runs on the watcher's own thread, never concurrently with itself; it should only post
    a request to the supervisor's loop. An exception it raises is logged and the watcher carries on.

    ``mode`` is the native observer's name (``"inotify"`` on Linux) while watching, ``"polling"`` after a
    fallback (``on_change`` every ``fallback_poll_s``, for the rest of the watcher's life) and
    ``"stopped"`` before :meth:`start` and after :meth:`stop`.
    """

    def __init__(
        self,
        tasks_dir: Path,
        on_change: Callable[[], None],
        *,
        debounce_s: float = 1.0,
        fallback_poll_s: float = 5.0,
        logger: logging.Logger | None = None,
        observer_factory: Callable[[], BaseObserver] | None = None,
        max_delay_s: float | None = None,
        coverage: Callable[[Path], Coverage] = check_coverage,
    ) -> None:
        if debounce_s < 0:
            raise ValueError(f"TaskWatcher for {tasks_dir}: debounce_s must be >= 0, got {debounce_s!r}")
        if fallback_poll_s <= 0:
            raise ValueError(f"TaskWatcher for {tasks_dir}: fallback_poll_s must be > 0, got {fallback_poll_s!r}")
        # Absolute but not resolved: watchdog reports paths under the string it was given, and
        # is_relevant compares against the same string.
        self._tasks_dir = Path(os.path.abspath(tasks_dir))
        self._on_change = on_change
        self._fallback_poll_s = fallback_poll_s
        self._log = logger or _LOG
        self._observer_factory = observer_factory
        self._coverage = coverage
        self._loops_reported: set[str] = set()
        ceiling = max_delay_s if max_delay_s is not None else max(debounce_s * _MAX_DELAY_FACTOR, debounce_s)
        self._debounce = Debouncer(quiet_s=debounce_s, max_delay_s=ceiling)
        # One lock guards everything below; watchdog's thread, the worker and the owner all take it.
        self._cond = threading.Condition()
        self._started = False
        self._stopping = False
        self._mode = MODE_STOPPED
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None
        self._next_poll: float | None = None  # only in polling mode
        self._root_lost = False  # Tasks/ itself was deleted under a native observer

    @property
    def mode(self) -> str:
        with self._cond:
            return self._mode

    def start(self) -> None:
        """Start watching (native observer, else polling fallback) and the debounce thread.

        Never raises because watching is impossible: that is logged as a warning and polling takes over.
        A watcher starts once; calling start() again is a programming error.
        """
        with self._cond:
            if self._started:
                raise RuntimeError(f"TaskWatcher for {self._tasks_dir} was already started")
            self._started = True
        observer, mode, cause = self._start_observer()
        gap = self._coverage_gap() if self._tasks_dir.is_dir() else None  # also reports symlink loops
        if observer is not None and gap is not None:
            self._discard_observer(observer, deadline=time.monotonic() + _STOP_BUDGET_S)
            observer, mode, cause = None, MODE_POLLING, gap
        with self._cond:
            if self._stopping:  # stop() raced with start(): do not leave the observer running
                pending: BaseObserver | None = observer
            else:
                pending = None
                self._observer = observer
                self._mode = mode
                if observer is None:
                    self._next_poll = time.monotonic() + self._fallback_poll_s
                self._worker = threading.Thread(target=self._run, name="taskautomation-watcher", daemon=True)
                self._worker.start()
        if pending is not None:
            self._discard_observer(pending, deadline=time.monotonic() + _STOP_BUDGET_S)
            return
        if cause is not None:
            self._log.warning(
                "cannot watch %s for changes (%s); polling: rescanning every %gs instead",
                self._tasks_dir,
                cause,
                self._fallback_poll_s,
            )
        else:
            self._log.info("watching %s for changes (%s)", self._tasks_dir, mode)

    def stop(self) -> None:
        """Stop the observer and the debounce thread and join every thread this watcher started.

        Idempotent, callable from ``on_change`` itself, and bounded: after ~1.5 s it gives up joining and
        logs what is still alive (all of these threads are daemons, so none can hold up interpreter exit).
        A pending, not yet due ``on_change`` is dropped: the caller is shutting down.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            observer, self._observer = self._observer, None
            worker, self._worker = self._worker, None
            self._mode = MODE_STOPPED
        deadline = time.monotonic() + _STOP_BUDGET_S
        if observer is not None:
            self._discard_observer(observer, deadline=deadline)
        if worker is not None and worker is not threading.current_thread():
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                self._log.warning(
                    "watcher thread for %s did not stop within %gs (on_change still running?)",
                    self._tasks_dir,
                    _STOP_BUDGET_S,
                )

    # -- watchdog side -------------------------------------------------------------------------------

    def _start_observer(self) -> tuple[BaseObserver | None, str, str | None]:
        """Return (observer, mode, None) when watching, or (None, "polling", cause) when not possible."""
        if not self._tasks_dir.is_dir():
            return None, MODE_POLLING, f"{self._tasks_dir} is not a directory"
        observer: BaseObserver | None = None
        try:
            if self._observer_factory is not None:
                observer = self._observer_factory()
            else:
                # Imported here so that a platform where even importing the observer fails also
                # ends in the polling fallback rather than in an import error of this module.
                from watchdog.observers import Observer

                observer = Observer()
            self._schedule(observer)
            observer.start()
        # Broad on purpose: watchdog raises OSError, UnsupportedLibcError, platform-specific errors; any
        # of them means "no native events", and polling is always a correct substitute.
        except Exception as exc:  # noqa: BLE001
            if observer is not None:
                self._discard_observer(observer, deadline=time.monotonic() + _STOP_BUDGET_S)
            return None, MODE_POLLING, _describe_failure(exc)
        return observer, _mode_name(observer), None

    def _schedule(self, observer: BaseObserver) -> None:
        sink = _EventSink(self._on_event)
        # Asking only for these lets inotify leave opens and closes-without-write in the kernel, so a
        # task run or a scan does not even wake watchdog's threads. is_relevant still filters: older
        # watchdog releases and other observers may not honour the filter.
        wanted = [
            getattr(wd_events, name)
            for name in (
                "FileCreatedEvent",
                "DirCreatedEvent",
                "FileDeletedEvent",
                "DirDeletedEvent",
                "FileMovedEvent",
                "DirMovedEvent",
                "FileModifiedEvent",
                "FileClosedEvent",
                "FileAttribEvent",  # chmod, chown, touch: a permission fix changes no content
                "DirAttribEvent",
            )
            if hasattr(wd_events, name)
        ]
        try:
            observer.schedule(sink, str(self._tasks_dir), recursive=True, event_filter=wanted)
        except TypeError:  # watchdog < 4 has no event_filter
            observer.schedule(sink, str(self._tasks_dir), recursive=True)

    def _on_event(self, event: FileSystemEvent) -> None:
        """Runs on watchdog's dispatcher thread: classify, then at most note the time and notify."""
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else None
        if not is_relevant(event.event_type, src, dest, tasks_dir=self._tasks_dir, is_directory=event.is_directory):
            return
        self._log.debug("change hint: %s %s%s", event.event_type, src, f" -> {dest}" if dest else "")
        with self._cond:
            self._debounce.note(time.monotonic())
            if event.event_type == EVENT_TYPE_DELETED and Path(src) == self._tasks_dir:
                # watchdog's emitter stops itself when its root goes; without this the watcher would
                # look alive and never report again.
                self._root_lost = True
            self._cond.notify_all()

    # -- debounce thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        """Sleep until the next due time (forever when idle), then call on_change outside the lock."""
        with self._cond:
            while not self._stopping:
                if self._root_lost and self._observer is not None:
                    self._fall_back_locked(f"{self._tasks_dir} was deleted")
                    continue
                due = self._due_at_locked()
                now = time.monotonic()
                if due is None:
                    self._cond.wait()
                    continue
                if now < due:
                    self._cond.wait(due - now)
                    continue
                self._debounce.take_if_due(now)
                if self._next_poll is not None:
                    self._next_poll = now + self._fallback_poll_s
                watching = self._observer is not None
                self._cond.release()
                gap = None
                try:
                    self._call_on_change()
                    if watching:  # a folder added since may be one the kernel refused to watch
                        gap = self._coverage_gap()
                finally:
                    self._cond.acquire()
                if gap is not None and self._observer is not None and not self._stopping:
                    self._fall_back_locked(gap)

    def _coverage_gap(self) -> str | None:
        """Why the native observer is not enough (some folder unwatched), or None; reports symlink loops."""
        try:
            found = self._coverage(self._tasks_dir)
        except Exception:  # noqa: BLE001 - a failed check must not stop watching; it just proves nothing
            self._log.debug("checking the watches of %s failed", self._tasks_dir, exc_info=True)
            return None
        for loop in found.loops:
            if loop not in self._loops_reported:
                self._loops_reported.add(loop)
                self._log.warning(
                    "%s is a symlink loop (it leads back to itself or a folder containing it); not followed", loop
                )
        if not (found.known and found.unwatched):
            return None
        return (
            f"{found.describe_unwatched()}; the inotify watch limit is probably reached: "
            "raise the sysctl fs.inotify.max_user_watches"
        )

    def _due_at_locked(self) -> float | None:
        candidates = [t for t in (self._debounce.due_at(), self._next_poll) if t is not None]
        return min(candidates) if candidates else None

    def _fall_back_locked(self, cause: str) -> None:
        """Switch from a dead native observer to polling; called with the lock held, releases it meanwhile."""
        observer, self._observer = self._observer, None
        self._mode = MODE_POLLING
        self._next_poll = time.monotonic() + self._fallback_poll_s
        self._cond.release()
        try:
            self._log.warning(
                "stopped watching %s (%s); polling: rescanning every %gs instead",
                self._tasks_dir,
                cause,
                self._fallback_poll_s,
            )
            if observer is not None:
                self._discard_observer(observer, deadline=time.monotonic() + _STOP_BUDGET_S)
        finally:
            self._cond.acquire()

    def _call_on_change(self) -> None:
        try:
            self._on_change()
        except Exception:  # noqa: BLE001 - a broken callback must not silently end all future notifications
            self._log.exception("watcher callback for %s failed", self._tasks_dir)

    def _discard_observer(self, observer: BaseObserver, *, deadline: float) -> None:
        """Stop and join an observer, started or not (InotifyObserver runs a thread from its constructor)."""
        try:
            observer.stop()
        except Exception:  # noqa: BLE001 - shutting down; report and keep going
            self._log.debug("stopping the observer for %s failed", self._tasks_dir, exc_info=True)
        if observer.is_alive():
            observer.join(max(0.0, deadline - time.monotonic()))
            if observer.is_alive():
                self._log.warning("observer for %s did not stop within %gs", self._tasks_dir, _STOP_BUDGET_S)


def _mode_name(observer: BaseObserver) -> str:
    """``InotifyObserver`` -> ``"inotify"``, ``FSEventsObserver`` -> ``"fsevents"``."""
    name = type(observer).__name__.lower()
    return name[: -len("observer")] if name.endswith("observer") and name != "observer" else name


def _describe_failure(exc: BaseException) -> str:
    """One line naming the cause, with the knob to turn where there is one."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{text}; raise the sysctl fs.inotify.max_user_watches"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return f"{text}; raise the sysctl fs.inotify.max_user_instances"
    return text
