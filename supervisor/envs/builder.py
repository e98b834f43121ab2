"""The loop's env builder: content keys and readiness on the loop thread, builds on worker threads.

Policies:
* Builds run in worker threads, at most ``workers`` at once; each posts ``EnvBuilt`` to the loop when done.
  Builders never spawn runs (PDEATHSIG is tied to the spawning thread).
* A build that fails for a reason worth retrying by itself (``EnvBuildError.transient``: an installer killed,
  an index unreachable) is reported with ``transient=True``; the loop decides when to try again.
* On the way out no installer outlives the supervisor: each runs in a session of its own, which is killed
  whole. A half-built env has no completion marker and is rebuilt from scratch at the next start.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ..errors import EnvBuildError
from ..events import EnvBuilt, Event
from .manager import EnvManager


class EnvBuilder(Protocol):
    """What the loop needs from environments. Every method but the build itself is cheap."""

    @property
    def installer(self) -> str: ...

    def key_for(self, requirements: Path, *, task_dir: Path) -> str: ...

    def is_ready(self, key: str) -> bool: ...

    def broken_reason(self, key: str) -> str | None:
        """Why a built env can no longer start its interpreter (base python gone); None when it can."""

    def env_dir(self, key: str) -> Path: ...

    def python_for(self, key: str) -> Path: ...

    def build(self, key: str, *, task: str, requirements: Path, task_dir: Path) -> None:
        """Build in the background; ``EnvBuilt(key, ...)`` is posted to the loop when it is done."""

    def collect(self, keep: Iterable[str]) -> list[str]:
        """Delete envs whose key is not in ``keep``; the removed keys."""

    def close(self) -> None:
        """Kill installers still running and wait briefly for their threads."""


class BackgroundEnvs:
    """``EnvBuilder`` over an ``EnvManager``, with a bounded number of builder threads."""

    def __init__(self, envs: EnvManager, *, envs_dir: Path, post: Callable[[Event], None], workers: int = 2) -> None:
        self.envs = envs
        self.envs_dir = str(envs_dir)
        self.post = post
        self.slots = threading.BoundedSemaphore(workers)
        self.threads: set[threading.Thread] = set()

    @property
    def installer(self) -> str:
        return self.envs.installer

    def key_for(self, requirements: Path, *, task_dir: Path) -> str:
        return self.envs.key_for(requirements, task_dir=task_dir)

    def is_ready(self, key: str) -> bool:
        return self.envs.is_ready(key)

    def broken_reason(self, key: str) -> str | None:
        return self.envs.broken_reason(key)

    def env_dir(self, key: str) -> Path:
        return self.envs.env_dir(key)

    def python_for(self, key: str) -> Path:
        return self.envs.python_for(key)

    def collect(self, keep: Iterable[str]) -> list[str]:
        return self.envs.gc(keep)

    def build(self, key: str, *, task: str, requirements: Path, task_dir: Path) -> None:
        def work() -> None:
            try:
                with self.slots:
                    try:
                        self.envs.ensure(task=task, requirements=requirements, task_dir=task_dir)
                    except EnvBuildError as exc:
                        self.post(EnvBuilt(key, error=str(exc), output=exc.output or None, transient=exc.transient))
                    except Exception as exc:  # noqa: BLE001 - any failure must reach the loop, not kill the thread
                        self.post(EnvBuilt(key, error=f"task {task!r}: env build crashed: {exc!r}"))
                    else:
                        self.post(EnvBuilt(key))
            finally:
                self.threads.discard(threading.current_thread())

        thread = threading.Thread(target=work, name=f"env-{key}", daemon=True)
        self.threads.add(thread)
        thread.start()

    def close(self) -> None:
        import psutil

        for child in psutil.Process().children():
            try:
                # Only installers: their command line names an env under this home (uv's --python ENV/bin/
                # python, or ENV/bin/python -m pip). Other children of an embedding process are not ours.
                if not any(self.envs_dir in arg for arg in child.cmdline()):
                    continue
            except psutil.Error:
                continue  # gone already, or not ours to inspect
            try:
                os.killpg(child.pid, signal.SIGKILL)  # installers run in a session of their own
            except OSError:
                try:
                    child.kill()
                except psutil.Error:
                    pass
        for thread in list(self.threads):
            thread.join(timeout=5.0)  # the builder reaps its installer and posts its (unread) result
