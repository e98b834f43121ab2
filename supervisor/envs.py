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

import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Protocol, Sequence

from . import safefile
from .envhealth import env_interpreter_problem
from .errors import ConfigError, EnvBuildError
from .paths import Paths
from .pep723 import script_requirements
from .safefile import UnsafeFileError
from .spec import EnvStatus

INSTALLERS = ("uv", "pip")
KEY_LENGTH = 16  # hex digits of sha256 used as the folder name; 64 bits is plenty for one home
MARKER_NAME = ".taskautomation-env.json"
SCRIPT_REQUIREMENTS_NAME = ".pep723-requirements.txt"  # a PEP 723 block's dependencies, as installed
DEFAULT_INSTALL_TIMEOUT_S = 30 * 60.0
_KEY_FORMAT_VERSION = "taskautomation-env-1"  # bump to invalidate every key when the build recipe changes
_MAX_REQUIREMENTS_RETRIES = 3  # rebuilds when requirements.txt keeps changing while being installed
_MAX_INCLUDE_DEPTH = 10
_REASON_MAX_CHARS = 1500
_KEY_RE = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")

# virtualenv keeps process-wide state (interpreter-discovery caches, app-data handles) that its in-process
# API does not guard against concurrent use; creating venvs is fast, so builders take turns at it.
_VIRTUALENV_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------------
# Pure logic: requirements normalisation, relative-path detection, installer-output summary
# ---------------------------------------------------------------------------------------------------------

_COMMENT_RE = re.compile(r"(^|\s+)#.*$")  # pip's rule: '#' starts a comment at line start or after whitespace
# Options whose value is a file path or a location that may be a local folder.
_PATH_OPTIONS = frozenset({
    "-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-f", "--find-links",
    "-i", "--index-url", "--extra-index-url",
})
_INCLUDE_OPTIONS = frozenset({"-r", "--requirement", "-c", "--constraint"})
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def normalize_requirements(text: str) -> tuple[str, ...]:
    """The lines of a requirements file that matter, in order.

    Continuation lines (trailing backslash) are joined, comments and blank lines dropped, surrounding
    whitespace stripped. Order is kept: it can matter to the installer (options, ``-r`` includes).
    """
    return tuple(line for _, line in numbered_requirements(text))


def numbered_requirements(text: str) -> tuple[tuple[int, str], ...]:
    """``normalize_requirements`` with the number (from 1) of the physical line each logical line starts on."""
    joined: list[tuple[int, str]] = []
    pending, first, continuing = "", 0, False
    for number, raw in enumerate(text.splitlines(), start=1):
        if not continuing:
            first = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continuing = True
            continue
        joined.append((first, pending + raw))
        pending, continuing = "", False
    if continuing:
        joined.append((first, pending))
    lines = ((number, _COMMENT_RE.sub("", line).strip()) for number, line in joined)
    return tuple((number, line) for number, line in lines if line)


def _split_option(token: str) -> tuple[str, str | None]:
    """``--find-links=wheels`` -> (``--find-links``, ``wheels``); ``-rother.txt`` -> (``-r``, ``other.txt``)."""
    if token.startswith("--"):
        name, sep, value = token.partition("=")
        return name, value if sep else None
    if len(token) > 2:
        return token[:2], token[2:].lstrip("=")
    return token, None


def _option_values(line: str) -> list[tuple[str, str]]:
    """(option, value) pairs for the path-taking options on one normalised line."""
    tokens = line.split()
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("-"):
            continue
        name, value = _split_option(token)
        if name not in _PATH_OPTIONS:
            continue
        if value is None and index < len(tokens):
            value = tokens[index]
            index += 1
        if value:
            pairs.append((name, value))
    return pairs


def _is_relative_location(value: str) -> bool:
    """True when an option value (a path or URL) is a path relative to the current directory."""
    if value.startswith("file:"):
        return not value[len("file:"):].startswith("/")  # file:///abs and file:/abs are absolute
    if "://" in value:
        return False
    return not value.startswith(("/", "~", "$"))  # ~ and $VAR do not depend on the task folder


def _looks_like_relative_path(token: str) -> bool:
    """True when a requirement token (not an option value) names a relative local path, as pip would read it."""
    if token.startswith("file:"):
        return not token[len("file:"):].startswith("/")
    if "://" in token or token.startswith(("/", "~", "$")):
        return False
    return token.startswith(".") or "/" in token or token.lower().endswith(_ARCHIVE_SUFFIXES)


def references_relative_path(lines: Sequence[str]) -> bool:
    """True when any normalised requirements line depends on the directory it is installed from.

    Deliberately generous: a false positive only costs sharing the env with other tasks, while a false
    negative would let two folders share an env built from the wrong local files.
    """
    for line in lines:
        if line.startswith("-"):
            if any(_is_relative_location(value) for _, value in _option_values(line)):
                return True
            continue
        # A requirement, possibly 'name @ url' and '; markers' (markers never hold paths).
        requirement = line.split(";", 1)[0] if " @ " not in line else line.split(" ;", 1)[0]
        if any(_looks_like_relative_path(token) for token in requirement.split()):
            return True
    return False


def included_files(lines: Sequence[str], *, base_dir: Path) -> list[Path]:
    """Files pulled in by ``-r``/``-c`` lines, resolved the way pip and uv do (relative to the including file)."""
    found: list[Path] = []
    for line in lines:
        if not line.startswith("-"):
            continue
        for name, value in _option_values(line):
            if name in _INCLUDE_OPTIONS and "://" not in value:
                path = Path(os.path.expandvars(value)).expanduser()
                found.append(path if path.is_absolute() else base_dir / path)
    return found


_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Lines that carry the installer's reason: pip prints "ERROR: ...", uv prints "error:" / "cause:" / "hint:"
# (or "×" / "╰─▶" when it thinks it is on a terminal, with wrapped continuation lines).
_REASON_RE = re.compile(r"^\s*(?:ERROR:|error:|Caused by:|cause:|hint:|×|╰─▶)\s*(.*)$")


# What pip and uv print when the index (or any URL they fetch) cannot be reached. A missing package or a
# build failure prints none of these, so it stays a permanent error until the task's files change.
_UNREACHABLE_RE = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|Connection refused|Connection reset by peer|Max retries exceeded"
    r"|Read timed out|ConnectTimeoutError|No route to host|dns error|tcp connect error"
    r"|error sending request for url|Could not connect to|failed to lookup address information",
    re.IGNORECASE)


def index_unreachable(output: str) -> bool:
    """True when an installer's output says a network fetch failed (a transient failure worth retrying)."""
    return _UNREACHABLE_RE.search(output) is not None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def summarize_installer_output(output: str) -> str:
    """The meaningful line(s) of a failed install, for an error message; the tail when nothing matches."""
    clean = [_ANSI_RE.sub("", line).rstrip() for line in output.splitlines()]
    reasons: list[str] = []
    inside = False  # continuing a wrapped reason line
    for line in clean:
        match = _REASON_RE.match(line)
        if match:
            if match.group(1):
                reasons.append(match.group(1).strip())
                inside = True
            continue
        stripped = line.strip().lstrip("│").strip()
        if inside and stripped and line.startswith((" ", "\t")):
            reasons[-1] = f"{reasons[-1]} {stripped}"
        else:
            inside = False
    if not reasons:
        reasons = [line.strip() for line in clean if line.strip()][-3:]
    unique = list(dict.fromkeys(reasons))
    summary = "; ".join(unique) or "no output"
    if len(summary) > _REASON_MAX_CHARS:
        summary = summary[: _REASON_MAX_CHARS - 3] + "..."
    return summary


def _lenient_requirements(path: Path) -> tuple[str, ...]:
    """Normalised lines of a requirements file for the env key: bytes that are not UTF-8 are kept as
    surrogates (the key only needs to be stable; the build reports the decoding error). Missing -> ()."""
    try:
        data = safefile.read_bytes(path, max_bytes=safefile.REQUIREMENTS_MAX_BYTES)
    except FileNotFoundError:
        return ()
    return normalize_requirements(data.decode("utf-8-sig", errors="surrogateescape"))


# ---------------------------------------------------------------------------------------------------------
# Running the installer
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InstallerRun:
    """What one installer invocation produced."""

    returncode: int | None  # None when it was killed on timeout
    output: str  # stdout and stderr, interleaved
    timed_out: bool = False


class InstallerRunner(Protocol):
    """Runs one installer command to completion; the seam tests use to count or fake installer calls."""

    def __call__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                 pass_fds: Sequence[int] = ()) -> InstallerRun: ...


def run_installer(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                  pass_fds: Sequence[int] = ()) -> InstallerRun:
    """Run ``argv`` in its own session with output captured; kill its whole process group on timeout.

    Its own session, so that the kill also reaches what the installer spawned (pip's build backends, uv's
    interpreter probes) and a Ctrl-C aimed at the supervisor's terminal does not hit the installer.
    """
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, pass_fds=tuple(pass_fds),
    )
    try:
        try:
            raw, _ = proc.communicate(timeout=timeout)
            return InstallerRun(proc.returncode, raw.decode("utf-8", errors="replace"))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            try:
                raw, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipe open
                raw = b""
            return InstallerRun(None, raw.decode("utf-8", errors="replace"), timed_out=True)
    finally:
        if proc.poll() is None:  # interrupted (e.g. KeyboardInterrupt): never leave an installer behind
            _kill_group(proc)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------------------
# Locating interpreters and installers (once, at construction)
# ---------------------------------------------------------------------------------------------------------

def _find_uv() -> Path | None:
    """The uv binary: the one shipped with the ``uv`` package, else the first on PATH."""
    try:
        import uv  # noqa: PLC0415 - optional dependency, only needed here

        return Path(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None


def _python_identity(base_python: Path) -> str:
    """Implementation, full version and real path of ``base_python``: an upgrade of it must change every key."""
    real = os.path.realpath(base_python)
    if real == os.path.realpath(sys.executable):
        impl = sys.implementation.name
        return f"{impl} {tuple(sys.version_info)} {getattr(sys, 'abiflags', '')} {real}"
    probe = "import sys; print(sys.implementation.name, tuple(sys.version_info), getattr(sys, 'abiflags', ''))"
    try:
        result = subprocess.run([str(base_python), "-c", probe], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvBuildError(f"base python {base_python} cannot be run: {exc}") from exc
    if result.returncode != 0:
        raise EnvBuildError(f"base python {base_python} cannot be run: {result.stderr.strip()[-500:]}")
    return f"{result.stdout.strip()} {real}"


def _python_version(base_python: Path) -> str:
    """``3.11.7``: the base interpreter's version, for a PEP 723 ``requires-python``."""
    if os.path.realpath(base_python) == os.path.realpath(sys.executable):
        return platform.python_version()
    try:
        result = subprocess.run([str(base_python), "-c", "import platform; print(platform.python_version())"],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvBuildError(f"base python {base_python} cannot be run: {exc}") from exc
    return result.stdout.strip() or "0"


# ---------------------------------------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------------------------------------

class EnvManager:
    """Builds, reuses and garbage-collects the content-addressed envs under ``HOME/envs/``.

    Thread-safe and multi-process-safe for ``ensure``. ``is_ready`` and ``python_for`` are cheap and never
    call an installer, so the loop thread may call them; ``ensure`` blocks and belongs on a builder thread.
    """

    def __init__(self, paths: Paths, *, installer: str = "uv", base_python: Path = Path(sys.executable),
                 logger: logging.Logger | None = None, run: InstallerRunner = run_installer,
                 install_timeout_s: float = DEFAULT_INSTALL_TIMEOUT_S) -> None:
        if installer not in INSTALLERS:
            raise ConfigError(f"installer {installer!r} is not one of: {', '.join(INSTALLERS)}")
        self._paths = paths
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._base_python = Path(base_python)
        self._run = run
        self._install_timeout_s = install_timeout_s
        # Resolved once: looking uv up from several builder threads at once has failed before.
        self._uv = _find_uv() if installer == "uv" else None
        if installer == "uv" and self._uv is None:
            self._log.warning("uv not found (neither the uv package nor on PATH); installing with pip instead")
            installer = "pip"
        self._installer = installer
        self._python_identity = _python_identity(self._base_python)
        self._python_version = _python_version(self._base_python)
        self._guard = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

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
            lines = normalize_requirements("\n".join(script)) if script is not None else \
                _lenient_requirements(requirements)
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
            with self._exclusive(key, task=task) as lock_fd:
                if self.is_ready(key):  # another thread or process built it while we waited
                    return EnvStatus(key=key, python=self.python_for(key), ready=True)
                if self._build(key, task=task, requirements=requirements, task_dir=task_dir, lock_fd=lock_fd):
                    return EnvStatus(key=key, python=self.python_for(key), ready=True)
        raise EnvBuildError(f"task {task!r}: {requirements} kept changing while its env was being built; "
                            f"gave up after {_MAX_REQUIREMENTS_RETRIES} attempts")

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
        from_ = requirements if self._script_lines(requirements, task_dir=task_dir) is None else \
            f"the '# /// script' block of {Path(task_dir) / 'main.py'}"
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
            self._log.warning("env %s: build for task %s failed after %.1f s", key, task,
                              time.monotonic() - started)
            raise
        self._log.info("env %s: ready for task %s in %.1f s (%s)", key, task, time.monotonic() - started,
                       self._installer)
        return True

    def _create_venv(self, folder: Path, *, task: str, requirements: Path) -> None:
        import virtualenv  # noqa: PLC0415 - heavy import, only needed when an env is actually built

        # The resolved path: virtualenv caches interpreter facts per path for the life of the process, so after
        # a distro upgrade repointed python3 it would still use the deleted binary behind the old answer.
        args = [str(folder), "--python", os.path.realpath(self._base_python), "--no-periodic-update",
                "--no-download", "--quiet"]
        # uv installs into any interpreter, so the env needs no pip; the pip installer needs the seeded pip
        # (from virtualenv's bundled wheels: no network).
        if self._installer == "uv":
            args.append("--no-seed")
        with _VIRTUALENV_LOCK:
            try:
                # setup_logging=False: its default replaces the host's root log handlers.
                virtualenv.cli_run(args, setup_logging=False)
            except (Exception, SystemExit) as exc:  # SystemExit: virtualenv's argument parser
                raise EnvBuildError(f"task {task!r}: cannot create the virtualenv {folder} for {requirements} "
                                    f"from {self._base_python}: {exc}") from exc

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
            reason = (f"{self._installer} timed out after {self._install_timeout_s:g} s and was killed; "
                      f"last output: {summarize_installer_output(result.output)}")
        elif result.returncode is not None and result.returncode < 0:
            # Killed from outside (the OOM killer, an admin, a shutdown): nothing is wrong with the task.
            transient = True
            reason = (f"installer killed by {_signal_name(-result.returncode)}; "
                      f"last output: {summarize_installer_output(result.output)}")
        elif result.returncode != 0:
            transient = index_unreachable(result.output)
            reason = f"{self._installer} failed (exit {result.returncode}): {summarize_installer_output(result.output)}"
            if transient:
                reason += " (the package index looks unreachable; will retry)"
        else:
            return
        raise EnvBuildError(f"task {task!r}: cannot install {requirements}: {reason}", output=result.output,
                            transient=transient)

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

    # -- locking -----------------------------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, key: str, *, task: str) -> Iterator[int]:
        """Hold the key's thread lock, then its file lock; yields the lock file's fd.

        Logs when it has to wait for another builder.
        """
        with self._guard:
            thread_lock = self._key_locks.setdefault(key, threading.Lock())
        if not thread_lock.acquire(blocking=False):
            self._log.info("env %s: task %s waits for another build of the same env (this process)", key, task)
            thread_lock.acquire()
        try:
            with self._file_lock(key, blocking=True, task=task) as fd:
                assert fd is not None  # blocking=True never yields None
                yield fd
        finally:
            thread_lock.release()

    @contextmanager
    def _file_lock(self, key: str, *, blocking: bool, task: str | None = None) -> Iterator[int | None]:
        """flock ``HOME/envs/<key>.lock``; yields its fd, or None when not blocking and it is held.

        After locking, the path must still name the locked file: gc unlinks lock files while holding them,
        and a builder that opened the old file before that must not think it holds the new one.
        """
        path = self._lock_path(key)
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

    def _lock_path(self, key: str) -> Path:
        return self._paths.envs / f"{self.env_dir(key).name}.lock"

    # -- PEP 723: main.py's '# /// script' block in place of requirements.txt (supervisor/pep723.py) --------

    def _script_lines(self, requirements: Path, *, task_dir: Path) -> tuple[str, ...] | None:
        """The block's dependencies when main.py has one (and no requirements.txt); else None."""
        return script_requirements(requirements, main_py=Path(task_dir) / "main.py", task=Path(task_dir).name,
                                   python_version=self._python_version, python=self._base_python)

    def _install_source(self, folder: Path, *, requirements: Path, task_dir: Path,
                        wanted: tuple[str, ...]) -> Path | None:
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
            with self._file_lock(key, blocking=False) as fd:
                if fd is None:
                    self._log.info("env %s: not collected, a build holds its lock", key)
                    continue
                if folder.exists():
                    shutil.rmtree(folder)
                # Unlinked while held: builders re-check the path after locking (see _file_lock).
                self._lock_path(key).unlink(missing_ok=True)
            removed.append(key)
            self._log.info("env %s: removed (no task uses it)", key)
        return removed
