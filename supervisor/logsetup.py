"""Logging: one rotating supervisor log, one rotating log per task, optional console echo.

Every line carries a timestamp with its UTC offset; run lines carry the run id. Per-task loggers do not propagate, so a chatty
task's output stays in its own file; lifecycle lines (loaded, started, ended) are written to both.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path

ROOT_LOGGER = "taskautomation"
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class ZonedFormatter(logging.Formatter):
    """Timestamps carry their UTC offset (``2026-11-29 14:05:09,123 +0100``): a reader in another zone, or
    looking at a line written before a DST change, knows which moment it was."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{super().formatTime(record, datefmt)} {time.strftime('%z', self.converter(record.created))}"


def _rotating(path: Path, *, max_bytes: int, backups: int) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                   encoding="utf-8")
    handler.setFormatter(ZonedFormatter(FORMAT))
    return handler


def setup_supervisor_logging(path: Path, *, max_bytes: int, backups: int,
                             console: bool = True) -> logging.Logger:
    """Configure the supervisor's logger (not the root logger: tasks never share this interpreter, but
    libraries we use must not have their handlers replaced either)."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.addHandler(_rotating(path, max_bytes=max_bytes, backups=backups))
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(ZonedFormatter(FORMAT))
        logger.addHandler(stream)
    return logger


class TaskLogs:
    """Hands out one logger per task, each writing to logs/tasks/NAME.log with size-based rotation."""

    def __init__(self, folder: Path, *, max_bytes: int, backups: int) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        self._backups = backups
        self._loggers: dict[str, logging.Logger] = {}
        self._lock = threading.Lock()  # relay threads ask for loggers too

    def path(self, task: str) -> Path:
        return self._folder / f"{task}.log"

    def get(self, task: str) -> logging.Logger:
        with self._lock:
            logger = self._loggers.get(task)
            if logger is None:
                # Logger names are dotted hierarchies: keep task names (which may hold dots) out of them.
                logger = logging.Logger(f"{ROOT_LOGGER}.task[{task}]", logging.INFO)
                logger.addHandler(_rotating(self.path(task), max_bytes=self._max_bytes,
                                            backups=self._backups))
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
