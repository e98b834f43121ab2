"""Logging: one rotating supervisor log, one rotating log per task, optional console echo.

Every line carries a timestamp with its UTC offset; run lines carry the run id. Per-task loggers do not
propagate, so a chatty task's output stays in its own file; lifecycle lines (loaded, started, ended) are
written to both.

Hardening policies:

- A task's log file is opened for each record and closed right after, so an idle task holds no file
  descriptor (500 tasks must not cost 500 fds). Task logs get a few lifecycle lines per run; run output is
  written by the run's monitor, not through these handlers.
- Log files are created 0600 and their folders 0700 (they hold every run's messages and output).
- A failed write (disk full, EMFILE, a removed folder) never prints a traceback: every handler reports
  through one :class:`LogErrorReporter`, which writes one line to stderr and then stays quiet for a minute,
  counting what it suppressed. Logging resumes by itself when the cause goes away.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from .paths import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, task_log_name

ROOT_LOGGER = "taskautomation"
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
# ``extra=`` of a supervisor-log record that stays off the console (a run's start: the console shows each
# run once, by its outcome line, so a task failing in a loop costs one console line per failure).
FILE_ONLY = {"file_only": True}


class ZonedFormatter(logging.Formatter):
    """Timestamps carry their UTC offset (``2026-11-29 14:05:09,123 +0100``): a reader in another zone, or
    looking at a line written before a DST change, knows which moment it was."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        return f"{super().formatTime(record, datefmt)} {time.strftime('%z', self.converter(record.created))}"


LOG_ERROR_QUIET_S = 60.0


class LogErrorReporter:
    """Turns logging failures into at most one stderr line per ``quiet_s`` (the rest are counted)."""

    def __init__(
        self,
        *,
        stream: Callable[[], TextIO] = lambda: sys.stderr,
        monotonic: Callable[[], float] = time.monotonic,
        quiet_s: float = LOG_ERROR_QUIET_S,
    ) -> None:
        self._stream = stream
        self._monotonic = monotonic
        self._quiet_s = quiet_s
        self._next_report = float("-inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def report(self, where: str, exc: BaseException | None) -> None:
        with self._lock:
            now = self._monotonic()
            if now < self._next_report:
                self._suppressed += 1
                return
            self._next_report = now + self._quiet_s
            suppressed, self._suppressed = self._suppressed, 0
        cause = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
        more = f" ({suppressed} more failure(s) since the last report)" if suppressed else ""
        line = (
            f"taskautomation: cannot write the log {where}: {cause}{more}; "
            f"further logging errors are counted and reported at most every {self._quiet_s:g} s\n"
        )
        try:
            stream = self._stream()
            stream.write(line)
            stream.flush()
        except Exception:  # noqa: BLE001 - stderr itself is gone: nothing left to tell
            pass


class _ReportingMixin:
    """``handleError`` through a LogErrorReporter instead of the stdlib's traceback on stderr."""

    reporter: LogErrorReporter
    baseFilename: str

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib name
        self.reporter.report(getattr(self, "baseFilename", "<console>"), sys.exc_info()[1])


class _PrivateFileMixin:
    """Open (and, after a rotation, re-open) the log file 0600 whatever the umask: it holds every run's
    messages and output. A file that exists keeps its mode (``doctor`` reports a loose one)."""

    baseFilename: str
    encoding: str | None
    errors: str | None

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        try:
            # Always append: a rotating handler never truncates (it rotates instead).
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


class _RotatingFile(_PrivateFileMixin, _ReportingMixin, logging.handlers.RotatingFileHandler):
    pass


class _ClosingRotatingFile(_PrivateFileMixin, _ReportingMixin, logging.handlers.RotatingFileHandler):
    """A rotating file handler that holds no file descriptor between records."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # opens the file (delay=True left it closed) and may rotate it
        finally:
            stream, self.stream = self.stream, None  # type: ignore[assignment]
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # a failed flush on close (disk full): the record is lost, reported once
                    self.handleError(record)


class _Console(_ReportingMixin, logging.StreamHandler):  # type: ignore[type-arg]
    pass


def _rotating(
    path: Path, *, max_bytes: int, backups: int, reporter: LogErrorReporter, keep_open: bool = True
) -> logging.Handler:
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    kind = _RotatingFile if keep_open else _ClosingRotatingFile
    handler = kind(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=not keep_open)
    handler.reporter = reporter
    handler.setFormatter(ZonedFormatter(FORMAT))
    return handler


def setup_supervisor_logging(
    path: Path, *, max_bytes: int, backups: int, console: bool = True, reporter: LogErrorReporter | None = None
) -> logging.Logger:
    """Configure the supervisor's logger (not the root logger: tasks never share this interpreter, but
    libraries we use must not have their handlers replaced either)."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    reporter = reporter if reporter is not None else LogErrorReporter()
    logger.addHandler(_rotating(path, max_bytes=max_bytes, backups=backups, reporter=reporter))
    if console:
        stream = _Console(sys.stderr)
        stream.setLevel(logging.INFO)  # DEBUG lines (one per lifecycle move) go to the file only
        stream.addFilter(lambda record: not getattr(record, "file_only", False))
        stream.reporter = reporter
        stream.setFormatter(ZonedFormatter(FORMAT))
        logger.addHandler(stream)
    return logger


class TaskLogs:
    """Hands out one logger per task, each writing to logs/tasks/NAME.log with size-based rotation."""

    def __init__(self, folder: Path, *, max_bytes: int, backups: int, reporter: LogErrorReporter | None = None) -> None:
        self._folder = folder
        self._reporter = reporter if reporter is not None else LogErrorReporter()
        self._max_bytes = max_bytes
        self._backups = backups
        self._loggers: dict[str, logging.Logger] = {}
        self._lock = threading.Lock()  # relay threads ask for loggers too

    def path(self, task: str) -> Path:
        return self._folder / task_log_name(task)

    def get(self, task: str) -> logging.Logger:
        with self._lock:
            logger = self._loggers.get(task)
            if logger is None:
                # Logger names are dotted hierarchies: keep task names (which may hold dots) out of them.
                logger = logging.Logger(f"{ROOT_LOGGER}.task[{task}]", logging.INFO)
                logger.addHandler(
                    _rotating(
                        self.path(task),
                        max_bytes=self._max_bytes,
                        backups=self._backups,
                        reporter=self._reporter,
                        keep_open=False,
                    )
                )
                self._loggers[task] = logger
            return logger

    def close(self, task: str | None = None) -> None:
        """Close one task's log file (task removed) or all of them (shutdown)."""
        with self._lock:
            names = [task] if task is not None else list(self._loggers)
            for name in names:
                logger = self._loggers.pop(name, None)
                if logger is None:
                    continue
                for handler in list(logger.handlers):
                    logger.removeHandler(handler)
                    handler.close()
