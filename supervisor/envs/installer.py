"""The env build's toolchain: locating uv, probing the base interpreter, running an installer (uv or pip)
in its own session, and reading its output (the reason of a failure, an unreachable index).

Output reading is pure; running is the ``InstallerRunner`` seam that tests use to count or fake installer
calls. EnvManager (envs.py) decides what to run and when.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence

from ..errors import EnvBuildError

_REASON_MAX_CHARS = 1500

# ---------------------------------------------------------------------------------------------------------
# Reading the installer's output (pure)
# ---------------------------------------------------------------------------------------------------------

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
    re.IGNORECASE,
)


def index_unreachable(output: str) -> bool:
    """True when an installer's output says a network fetch failed (a transient failure worth retrying)."""
    return _UNREACHABLE_RE.search(output) is not None


def describe_virtualenv_error(exc: BaseException) -> str:
    """virtualenv's failure in words, on one line.

    Its ``ProcessCallFailedError`` (a command it ran itself failed) prints as the raw tuple of its arguments,
    ``(2, '', "[Errno 2] No such file or directory: ...", [...])``; it is read by attribute instead. A
    command that could not be started at all (virtualenv then puts the errno where the exit code goes and
    the OS error, ``[Errno 2] ...``, as stderr) reads "cannot run PROGRAM: ERROR", one that failed reads
    "PROGRAM failed (exit N): REASON". Any other exception is its message on one line, or its type.
    """
    code, err, out, cmd = (getattr(exc, name, None) for name in ("code", "err", "out", "cmd"))
    if isinstance(code, int) and isinstance(cmd, list) and cmd:
        program = str(cmd[0])
        said = " ".join(str(text) for text in (err, out) if text).strip()
        if said.startswith("[Errno"):
            return f"cannot run {program}: {said.splitlines()[-1]}"
        reason = summarize_installer_output(said) if said else "no output"
        return f"{program} failed (exit {code}): {reason}"
    if isinstance(exc, SystemExit):  # its argument parser: the reason went to stderr, the code is all we have
        return f"virtualenv refused its command line (exit {exc.code})"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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

    def __call__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, pass_fds: Sequence[int] = ()
    ) -> InstallerRun: ...


def run_installer(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, pass_fds: Sequence[int] = ()
) -> InstallerRun:
    """Run ``argv`` in its own session with output captured; kill its whole process group on timeout.

    Its own session, so that the kill also reaches what the installer spawned (pip's build backends, uv's
    interpreter probes) and a Ctrl-C aimed at the supervisor's terminal does not hit the installer.
    """
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
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
# Locating the installer and probing the base interpreter (once, when an EnvManager is made)
# ---------------------------------------------------------------------------------------------------------


def find_uv() -> Path | None:
    """The uv binary: the one shipped with the ``uv`` package, else the first on PATH."""
    try:
        import uv  # noqa: PLC0415 - optional dependency, only needed here

        return Path(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None


def python_identity(base_python: Path) -> str:
    """Implementation, full version and real path of ``base_python``: an upgrade of it must change every key."""
    real = os.path.realpath(base_python)
    if real == os.path.realpath(sys.executable):
        impl = sys.implementation.name
        return f"{impl} {tuple(sys.version_info)} {getattr(sys, 'abiflags', '')} {real}"
    probe = "import sys; print(sys.implementation.name, tuple(sys.version_info), getattr(sys, 'abiflags', ''))"
    try:
        result = subprocess.run(
            [str(base_python), "-c", probe],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvBuildError(f"base python {base_python} cannot be run: {exc}") from exc
    if result.returncode != 0:
        raise EnvBuildError(f"base python {base_python} cannot be run: {result.stderr.strip()[-500:]}")
    return f"{result.stdout.strip()} {real}"


def python_version(base_python: Path) -> str:
    """``3.11.7``: the base interpreter's version, for a PEP 723 ``requires-python``."""
    if os.path.realpath(base_python) == os.path.realpath(sys.executable):
        return platform.python_version()
    try:
        result = subprocess.run(
            [str(base_python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvBuildError(f"base python {base_python} cannot be run: {exc}") from exc
    return result.stdout.strip() or "0"
