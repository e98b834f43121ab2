"""Per-task virtualenvs under ``HOME/envs/``, content-addressed by their requirements.

Policy:

- An env's *key* is a hash of what decides its contents: the base interpreter (implementation, exact version,
  real path), the installer (uv or pip) and the normalised ``requirements.txt`` (plus the normalised text of
  any ``-r``/``-c`` file it pulls in). Tasks with identical requirements share one env; a changed
  requirements.txt yields a new key and a new folder, so an env that is serving runs is never installed into.
  The old env keeps serving until the caller switches to the new key, and ``gc`` removes it afterwards.
- When the requirements name a relative local path (``-e .``, ``./pkg``, ``--find-links wheels``,
  ``file:pkg``, ``-r other.txt``) the absolute task folder is part of the key: installs run with
  ``cwd = task_dir``, so the same text means different things in different folders.
- An env is *ready* only once its completion marker exists and names its key. The marker is written last,
  after a successful install; a failed or interrupted build leaves no marker, and the next build of that key
  wipes the half-built folder first. A run must only ever be given a ready env.
- Builds are serialised per key by a thread lock (inside this process) and an ``flock`` on
  ``HOME/envs/<key>.lock`` (across processes). The installer inherits the lock, so an installer orphaned by a
  killed supervisor still holds it and a successor waits instead of wiping the folder under it.
- venvs are built in place: their scripts hold absolute paths, so a build-then-rename would break them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .. import safefile
from ..errors import ConfigError, EnvBuildError
from ..model import EnvStatus
from ..paths import Paths
from ..safefile import UnsafeFileError
from ..signals import signal_name
from .health import env_interpreter_problem
from .installer import (
    InstallerRunner,
    describe_virtualenv_error,
    find_uv,
    index_unreachable,
    python_identity,
    python_version,
    run_installer,
    summarize_installer_output,
)
from .locks import KeyLocks
from .pep723 import script_requirements
from .reqparse import included_files, normalize_requirements, references_relative_path

INSTALLERS = ("uv", "pip")
KEY_LENGTH = 16  # hex digits of sha256 used as the folder name; 64 bits is plenty for one home
MARKER_NAME = ".taskautomation-env.json"
SCRIPT_REQUIREMENTS_NAME = ".pep723-requirements.txt"  # a PEP 723 block's dependencies, as installed
DEFAULT_INSTALL_TIMEOUT_S = 30 * 60.0
_KEY_FORMAT_VERSION = "taskautomation-env-1"  # bump to invalidate every key when the build recipe changes
_MAX_REQUIREMENTS_RETRIES = 3  # rebuilds when requirements.txt keeps changing while being installed
_MAX_INCLUDE_DEPTH = 10
_KEY_RE = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")

# virtualenv keeps process-wide state (interpreter-discovery caches, app-data handles) that its in-process
# API does not guard against concurrent use; creating venvs is fast, so builders take turns at it.
_VIRTUALENV_LOCK = threading.Lock()


def _lenient_requirements(path: Path) -> tuple[str, ...]:
    """Normalised lines of a requirements file for the env key: bytes that are not UTF-8 are kept as
    surrogates (the key only needs to be stable; the build reports the decoding error). Missing -> ()."""
    try:
        data = safefile.read_bytes(path, max_bytes=safefile.REQUIREMENTS_MAX_BYTES)
    except FileNotFoundError:
        return ()
    return normalize_requirements(data.decode("utf-8-sig", errors="surrogateescape"))


# ---------------------------------------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------------------------------------


class EnvManager:
    """Builds, reuses and garbage-collects the content-addressed envs under ``HOME/envs/``.

    Thread-safe and multi-process-safe for ``ensure``. ``is_ready`` and ``python_for`` are cheap and never
    call an installer, so the loop thread may call them; ``ensure`` blocks and belongs on a builder thread.
    """

    def __init__(
        self,
        paths: Paths,
        *,
        installer: str = "uv",
        base_python: Path = Path(sys.executable),
        logger: logging.Logger | None = None,
        run: InstallerRunner = run_installer,
        install_timeout_s: float = DEFAULT_INSTALL_TIMEOUT_S,
    ) -> None:
        if installer not in INSTALLERS:
            raise ConfigError(f"installer {installer!r} is not one of: {', '.join(INSTALLERS)}")
        self._paths = paths
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._base_python = Path(base_python)
        self._run = run
        self._install_timeout_s = install_timeout_s
        # Resolved once: looking uv up from several builder threads at once has failed before.
        self._uv = find_uv() if installer == "uv" else None
        if installer == "uv" and self._uv is None:
            self._log.warning("uv not found (neither the uv package nor on PATH); installing with pip instead")
            installer = "pip"
        self._installer = installer
        self._python_identity = python_identity(self._base_python)
        self._python_version = python_version(self._base_python)
        self._locks = KeyLocks(paths.envs, logger=self._log)

    @property
    def installer(self) -> str:
        """The installer actually used ("pip" when uv was asked for but not found)."""
        return self._installer

    # -- keys and paths ----------------------------------------------------------------------------------

    def key_for(self, requirements: Path, *, task_dir: Path) -> str:
        """The content key of the env these requirements need (a missing requirements.txt is empty, unless
        main.py declares a PEP 723 block: then the block's dependencies take the place of its lines).

        Never raises for the requirements file itself and never blocks on it: a requirements.txt that is a
        directory, a FIFO, unreadable or over the size cap gives a key that records that (stable until the
        file changes), and building that key reports the cause as the task's EnvBuildError. A PEP 723 block
        that is invalid, unmet (requires-python) or next to a requirements.txt is a ConfigError.
        """
        digest = hashlib.sha256()

        def feed(part: str) -> None:
            digest.update(part.encode("utf-8", errors="surrogateescape") + b"\0")

        feed(_KEY_FORMAT_VERSION)
        feed(self._python_identity)
        feed(self._installer)
        script = self._script_lines(requirements, task_dir=task_dir)
        try:
            lines = (
                normalize_requirements("\n".join(script)) if script is not None else _lenient_requirements(requirements)
            )
        except UnsafeFileError as exc:
            feed(f"<unsafe {exc.kind}>")
            return digest.hexdigest()[:KEY_LENGTH]
        relative = references_relative_path(lines)
        feed("\n".join(lines))
        # Includes are hashed by content: editing other.txt must produce a new env just like editing
        # requirements.txt would.
        seen: set[Path] = set()
        pending = [(path, 1) for path in included_files(lines, base_dir=requirements.parent)]
        while pending:
            path, depth = pending.pop(0)
            resolved = path.resolve()
            if resolved in seen or depth > _MAX_INCLUDE_DEPTH:
                continue
            seen.add(resolved)
            feed(f"include {resolved}")
            try:
                nested = _lenient_requirements(resolved)
            except (FileNotFoundError, UnsafeFileError):
                feed("<unreadable>")  # the installer will report it; the key just has to be stable
                continue
            feed("\n".join(nested))
            relative = relative or references_relative_path(nested)
            pending.extend((p, depth + 1) for p in included_files(nested, base_dir=resolved.parent))
        if relative:
            feed(f"task_dir {Path(task_dir).resolve()}")
        return digest.hexdigest()[:KEY_LENGTH]

    def env_dir(self, key: str) -> Path:
        """``HOME/envs/<key>``."""
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"not an env key: {key!r}")
        return self._paths.envs / key

    def python_for(self, key: str) -> Path:
        """``HOME/envs/<key>/bin/python`` (whether or not it is ready)."""
        return self.env_dir(key) / "bin" / "python"

    def is_ready(self, key: str) -> bool:
        """True when the env's completion marker exists, names ``key``, and the interpreter is there.

        One small file read and one stat; never calls an installer.
        """
        folder = self.env_dir(key)
        try:
            marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        # A removed base interpreter (distro upgrade, pyenv removal) makes the env not ready: ensure() then
        # rebuilds it (see broken_reason).
        return isinstance(marker, dict) and marker.get("key") == key and env_interpreter_problem(folder) is None

    def broken_reason(self, key: str) -> str | None:
        """Why a *built* env (its marker is there) can no longer start its interpreter; None when it can or
        when it was never built. A few stats: the loop may call it at every key check and spawn failure."""
        folder = self.env_dir(key)
        if not (folder / MARKER_NAME).is_file():
            return None
        problem = env_interpreter_problem(folder)
        return f"env {key}: {problem}" if problem is not None else None

    # -- building ----------------------------------------------------------------------------------------

    def ensure(self, *, task: str, requirements: Path, task_dir: Path) -> EnvStatus:
        """Return the task's ready env, building it first if needed; raise EnvBuildError on failure.

        Blocking. A ready env is returned at once without a lock or an installer call. Otherwise the build
        runs under the key's locks; a caller that waited for another builder of the same key finds the env
        ready and returns it. If requirements.txt changes while it is being installed, the half-matching env
        is discarded and the new content is built instead (a few times, then it gives up).
        """
        for _attempt in range(_MAX_REQUIREMENTS_RETRIES):
            key = self.key_for(requirements, task_dir=task_dir)
            if self.is_ready(key):
                return EnvStatus(key=key, python=self.python_for(key), ready=True)
            with self._locks.exclusive(key, task=task) as lock_fd:
                if self.is_ready(key):  # another thread or process built it while we waited
                    return EnvStatus(key=key, python=self.python_for(key), ready=True)
                if self._build(key, task=task, requirements=requirements, task_dir=task_dir, lock_fd=lock_fd):
                    return EnvStatus(key=key, python=self.python_for(key), ready=True)
        raise EnvBuildError(
            f"task {task!r}: {requirements} kept changing while its env was being built; "
            f"gave up after {_MAX_REQUIREMENTS_RETRIES} attempts"
        )

    def _build(self, key: str, *, task: str, requirements: Path, task_dir: Path, lock_fd: int) -> bool:
        """Build env ``key`` in place; False when the requirements changed under the install.

        Caller holds the key's locks. Nobody can be using this folder: it has no marker, and runs are only
        given envs that have one.
        """
        folder = self.env_dir(key)
        started = time.monotonic()
        broken = self.broken_reason(key)
        if broken is not None:  # self-healing: the one line that says why a finished env is built again
            self._log.warning("%s; rebuilding it for task %s", broken, task)
        from_ = (
            requirements
            if self._script_lines(requirements, task_dir=task_dir) is None
            else f"the '# /// script' block of {Path(task_dir) / 'main.py'}"
        )
        self._log.info("env %s: building for task %s with %s from %s", key, task, self._installer, from_)
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)  # a half-built leftover of a failed or interrupted build
        try:
            # Read before creating anything: a requirements.txt that cannot be read fails in a millisecond.
            wanted = self._read_requirements(requirements, task=task)
            self._create_venv(folder, task=task, requirements=requirements)
            source = self._install_source(folder, requirements=requirements, task_dir=task_dir, wanted=wanted)
            if source is not None:
                self._install(key, task=task, requirements=source, task_dir=task_dir, lock_fd=lock_fd)
            if self.key_for(requirements, task_dir=task_dir) != key:
                self._log.info("env %s: %s changed during the build; discarding it", key, requirements)
                shutil.rmtree(folder, ignore_errors=True)
                return False
            self._write_marker(key, task=task, requirements=requirements)
        except BaseException:
            # No marker was written; remove the half env now rather than at the next build.
            shutil.rmtree(folder, ignore_errors=True)
            self._log.warning("env %s: build for task %s failed after %.1f s", key, task, time.monotonic() - started)
            raise
        self._log.info(
            "env %s: ready for task %s in %.1f s (%s)", key, task, time.monotonic() - started, self._installer
        )
        return True

    def _create_venv(self, folder: Path, *, task: str, requirements: Path) -> None:
        import virtualenv  # noqa: PLC0415 - heavy import, only needed when an env is actually built

        # The resolved path: virtualenv caches interpreter facts per path for the life of the process, so after
        # a distro upgrade repointed python3 it would still use the deleted binary behind the old answer.
        args = [
            str(folder),
            "--python",
            os.path.realpath(self._base_python),
            "--no-periodic-update",
            "--no-download",
            "--quiet",
        ]
        # uv installs into any interpreter, so the env needs no pip; the pip installer needs the seeded pip
        # (from virtualenv's bundled wheels: no network).
        if self._installer == "uv":
            args.append("--no-seed")
        with _VIRTUALENV_LOCK:
            try:
                # setup_logging=False: its default replaces the host's root log handlers.
                virtualenv.cli_run(args, setup_logging=False)
            except (Exception, SystemExit) as exc:  # SystemExit: virtualenv's argument parser
                raise EnvBuildError(
                    f"task {task!r}: cannot create the virtualenv {folder} for {requirements} "
                    f"from {self._base_python}: {describe_virtualenv_error(exc)}"
                ) from exc

    def _install(self, key: str, *, task: str, requirements: Path, task_dir: Path, lock_fd: int) -> None:
        python = self.python_for(key)
        if self._installer == "uv":
            assert self._uv is not None
            argv = [str(self._uv), "pip", "install", "--python", str(python), "-r", str(requirements)]
        else:
            argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(requirements)]
        env = dict(os.environ)
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", UV_NO_PROGRESS="1")
        # These would show the host's packages to the env's pip ("already satisfied") or misplace its stdlib.
        for leak in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(leak, None)
        # The installer inherits the key's lock: if the supervisor dies mid-build, a successor waits for the
        # orphaned installer instead of wiping the folder it is still writing to.
        result = self._run(argv, cwd=Path(task_dir), env=env, timeout=self._install_timeout_s, pass_fds=(lock_fd,))
        transient = False
        if result.timed_out:
            reason = (
                f"{self._installer} timed out after {self._install_timeout_s:g} s and was killed; "
                f"last output: {summarize_installer_output(result.output)}"
            )
        elif result.returncode is not None and result.returncode < 0:
            # Killed from outside (the OOM killer, an admin, a shutdown): nothing is wrong with the task.
            transient = True
            reason = (
                f"installer killed by {signal_name(-result.returncode)}; "
                f"last output: {summarize_installer_output(result.output)}"
            )
        elif result.returncode != 0:
            transient = index_unreachable(result.output)
            reason = f"{self._installer} failed (exit {result.returncode}): {summarize_installer_output(result.output)}"
            if transient:
                reason += " (the package index looks unreachable; will retry)"
        else:
            return
        raise EnvBuildError(
            f"task {task!r}: cannot install {requirements}: {reason}", output=result.output, transient=transient
        )

    def _write_marker(self, key: str, *, task: str, requirements: Path) -> None:
        """Write the completion marker atomically; it is the last thing a build does."""
        folder = self.env_dir(key)
        marker = {
            "key": key,
            "task": task,
            "requirements": str(requirements),
            "python": str(self.python_for(key)),
            "base_python": str(self._base_python),
            "installer": self._installer,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        partial = folder / f"{MARKER_NAME}.partial"
        with open(partial, "w", encoding="utf-8") as handle:
            json.dump(marker, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, folder / MARKER_NAME)

    # -- PEP 723: main.py's '# /// script' block in place of requirements.txt (supervisor/pep723.py) --------

    def _script_lines(self, requirements: Path, *, task_dir: Path) -> tuple[str, ...] | None:
        """The block's dependencies when main.py has one (and no requirements.txt); else None."""
        return script_requirements(
            requirements,
            main_py=Path(task_dir) / "main.py",
            task=Path(task_dir).name,
            python_version=self._python_version,
            python=self._base_python,
        )

    def _install_source(
        self, folder: Path, *, requirements: Path, task_dir: Path, wanted: tuple[str, ...]
    ) -> Path | None:
        """The file to ``-r`` install: requirements.txt (whose lines are ``wanted``), or the block's
        dependencies written into the env folder (so uv and pip read them the same way); None when there is
        nothing to install."""
        script = self._script_lines(requirements, task_dir=task_dir)
        if script is None:
            return requirements if wanted else None
        if not script:
            return None
        generated = folder / SCRIPT_REQUIREMENTS_NAME
        generated.write_text("".join(f"{line}\n" for line in script), encoding="utf-8")
        return generated

    def _read_requirements(self, requirements: Path, *, task: str) -> tuple[str, ...]:
        """The normalised lines to install; a bad file is an EnvBuildError naming task, file and cause."""
        try:
            text = safefile.read_text(requirements, max_bytes=safefile.REQUIREMENTS_MAX_BYTES)
        except FileNotFoundError:
            return ()
        except UnsafeFileError as exc:
            raise EnvBuildError(f"task {task!r}: {exc}") from None
        return normalize_requirements(text)

    # -- garbage collection ------------------------------------------------------------------------------

    def gc(self, keep: Iterable[str]) -> list[str]:
        """Delete env folders and lock files whose key is not in ``keep``; return the removed keys.

        Skips any env whose lock is held (a build in progress, here or in another process). Only names that
        look like env keys are considered: anything else in ``envs/`` is left alone. The caller must include
        every key a run may still be using in ``keep``.
        """
        keep_set = set(keep)
        envs = self._paths.envs
        if not envs.is_dir():
            return []
        candidates: set[str] = set()
        for entry in envs.iterdir():
            name = entry.name[: -len(".lock")] if entry.name.endswith(".lock") else entry.name
            if _KEY_RE.fullmatch(name) and name not in keep_set:
                candidates.add(name)
        removed: list[str] = []
        for key in sorted(candidates):
            folder = self.env_dir(key)
            if folder.exists() and (folder.is_symlink() or not folder.is_dir()):
                continue  # not something a build made
            with self._locks.file_lock(key, blocking=False) as fd:
                if fd is None:
                    self._log.info("env %s: not collected, a build holds its lock", key)
                    continue
                if folder.exists():
                    shutil.rmtree(folder)
                # Unlinked while held: builders re-check the path after locking (see KeyLocks.file_lock).
                self._locks.lock_path(self.env_dir(key).name).unlink(missing_ok=True)
            removed.append(key)
            self._log.info("env %s: removed (no task uses it)", key)
        return removed
