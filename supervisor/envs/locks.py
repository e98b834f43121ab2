"""Per-key build locks of the env folders: a thread lock (inside this process) and an ``flock`` on
``HOME/envs/<key>.lock`` (across processes).

The lock file's fd is handed to the installer, so an installer orphaned by a killed supervisor still holds the
lock and a successor waits instead of wiping the folder under it. ``gc`` unlinks a lock file while holding it;
a builder re-checks the path after locking, so it never holds a lock file that is no longer there.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class KeyLocks:
    """The build locks of every env key under ``envs`` (the folder the env folders and lock files are in)."""

    def __init__(self, envs: Path, *, logger: logging.Logger) -> None:
        self._envs = envs
        self._log = logger
        self._guard = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    @contextmanager
    def exclusive(self, key: str, *, task: str) -> Iterator[int]:
        """Hold the key's thread lock, then its file lock; yields the lock file's fd.

        Logs when it has to wait for another builder.
        """
        with self._guard:
            thread_lock = self._key_locks.setdefault(key, threading.Lock())
        if not thread_lock.acquire(blocking=False):
            self._log.info("env %s: task %s waits for another build of the same env (this process)", key, task)
            thread_lock.acquire()
        try:
            with self.file_lock(key, blocking=True, task=task) as fd:
                assert fd is not None  # blocking=True never yields None
                yield fd
        finally:
            thread_lock.release()

    @contextmanager
    def file_lock(self, key: str, *, blocking: bool, task: str | None = None) -> Iterator[int | None]:
        """flock ``HOME/envs/<key>.lock``; yields its fd, or None when not blocking and it is held.

        After locking, the path must still name the locked file: gc unlinks lock files while holding them,
        and a builder that opened the old file before that must not think it holds the new one.
        """
        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if not blocking:
                        os.close(fd)
                        fd = -1
                        yield None
                        return
                    self._log.info("env %s: task %s waits for another builder of the same env (lock file)", key, task)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue  # removed by gc while we waited: lock the file that is there now
                yield fd
                return
            finally:
                if fd >= 0:
                    os.close(fd)  # closing the last fd releases the flock

    def lock_path(self, key: str) -> Path:
        """``<envs>/<key>.lock`` (``key`` is checked by the caller)."""
        return self._envs / f"{key}.lock"
