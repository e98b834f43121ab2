"""Every path the supervisor reads or writes, derived from one HOME folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

HOME_ENV_VAR = "TASKAUTOMATION_HOME"
# logs/ and its state hold every run's messages and output, the history and the control socket: only the
# user who runs the supervisor may read them. Created with these modes (see docs/running.md); an existing
# home's looser modes are left alone and reported by ``doctor``.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the terminating NUL
# A folder name may use all of NAME_MAX (255 bytes); its log file adds ".log" and rotation adds ".N".
_LITERAL_LOG_STEM_MAX = 200


def task_log_name(task: str) -> str:
    """The file name of a task's log: ``NAME.log``, shortened with a hash when NAME is long.

    Policy: names up to 200 bytes are used as they are. A longer name keeps its first 200 bytes (cut at a
    character boundary) plus ``~`` and 32 hex digits of its sha256, so the log file and its rotated
    backups (``.log.N``) stay under NAME_MAX (255 bytes). Collision-free: a shortened stem is always longer
    than 200 bytes, so it never equals a literal one, and two long names share a stem only if they share a
    128-bit hash.
    """
    raw = os.fsencode(task)
    if len(raw) <= _LITERAL_LOG_STEM_MAX:
        return f"{task}.log"
    digest = hashlib.sha256(raw).hexdigest()[:32]
    head = raw[:_LITERAL_LOG_STEM_MAX].decode("utf-8", errors="ignore")  # drops a cut multi-byte character
    return f"{head}~{digest}.log"


# The files of a task folder (the seed format, unchanged).
MAIN_FILE = "main.py"
CONFIG_FILE = "config.ini"
REQUIREMENTS_FILE = "requirements.txt"
OUTPUT_DIR = "Output"  # the task's own output: never watched, never part of its content
BYTECODE_DIR = "__pycache__"
# Editor leftovers and probes, matched on the last path component. vim writes ``4913`` to test whether it
# may create files in a folder; emacs autosaves as ``#name#`` (and locks as ``.#name``, hidden).
_TEMP_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".pyc", ".pyo")
_TEMP_NAMES = frozenset({"4913"})


def is_noise(name: str) -> bool:
    """A file or folder name that is never task content: hidden, bytecode, or an editor's temp file."""
    if name.startswith(".") or name == BYTECODE_DIR or name in _TEMP_NAMES or name.endswith(_TEMP_SUFFIXES):
        return True
    return len(name) > 1 and name.startswith("#") and name.endswith("#")


def is_task_content(parts: tuple[str, ...]) -> bool:
    """Whether a path below ``Tasks/`` (as its parts: ``("NAME", "helpers", "x.py")``) can change what a
    task is: the one rule discovery (what it hashes) and the watcher (what wakes a rescan) share.

    Not content: the task's own ``Output/`` and anything in it, and any noise (``is_noise``) on the way.
    """
    if len(parts) >= 2 and parts[1] == OUTPUT_DIR:
        return False
    return not any(is_noise(part) for part in parts)


@dataclass(frozen=True)
class Paths:
    """One object knows every path; nothing else joins path strings.

    All state the supervisor writes lives under ``home``.
    """

    home: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None, *, default: Path) -> Paths:
        """--home wins, then $TASKAUTOMATION_HOME, then ``default`` (the folder of main.py)."""
        chosen = home if home is not None else os.environ.get(HOME_ENV_VAR) or default
        return cls(Path(chosen).expanduser().resolve())

    @property
    def tasks(self) -> Path:
        return self.home / "Tasks"

    def task_dir(self, name: str) -> Path:
        return self.tasks / name

    def task_output(self, name: str) -> Path:
        return self.tasks / name / OUTPUT_DIR

    def task_main(self, name: str) -> Path:
        return self.tasks / name / MAIN_FILE

    def task_config(self, name: str) -> Path:
        return self.tasks / name / CONFIG_FILE

    def task_requirements(self, name: str) -> Path:
        return self.tasks / name / REQUIREMENTS_FILE

    @property
    def run_cookie_prefix(self) -> str:
        """The prefix of every run cookie of this home: how a restarted supervisor recognises what a crashed
        one left running (the value is a contract: tests pin its shape)."""
        return hashlib.sha256(str(self.home).encode()).hexdigest()[:12] + "/"

    @property
    def home_secrets(self) -> Path:
        """HOME/.env: secrets for every task (python-dotenv syntax)."""
        return self.home / ".env"

    def task_secrets(self, name: str) -> Path:
        """Tasks/NAME/.env: the task's own secrets; they win over HOME/.env."""
        return self.tasks / name / ".env"

    @property
    def envs(self) -> Path:
        return self.home / "envs"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def task_logs(self) -> Path:
        return self.logs / "tasks"

    def task_log(self, name: str) -> Path:
        return self.task_logs / task_log_name(name)

    @property
    def state(self) -> Path:
        """Runtime files that are not logs: lock, control socket, database."""
        return self.home / "logs" / "state"

    @property
    def database(self) -> Path:
        return self.state / "history.sqlite3"

    @property
    def lock_file(self) -> Path:
        return self.state / "supervisor.lock"

    @property
    def control_socket(self) -> Path:
        """The Unix socket the CLI talks to: under HOME, unless that path is too long for a socket.

        Linux limits a socket path to 107 bytes; a home deep in the file system would make bind() fail and
        the supervisor refuse to start. Then the socket goes to the temp folder under a name derived from
        the home (and the user), so the supervisor and every CLI call agree on it.
        """
        preferred = self.state / "control.sock"
        if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.home)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"taskautomation-{os.getuid()}-{digest}.sock"

    @property
    def home_config(self) -> Path:
        """Optional home-level settings (installer, default limits, retention)."""
        return self.home / "taskautomation.ini"

    def ensure(self) -> None:
        """Create the folders the supervisor writes to (Tasks/ too, so a fresh home works).

        logs/, logs/tasks/ and logs/state/ are created private (``PRIVATE_DIR_MODE``); Tasks/ and envs/ get
        the user's umask (the user's own files, and interpreters that other tools may run). A folder that
        exists already keeps its mode.
        """
        for folder in (self.tasks, self.envs):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.logs, self.task_logs, self.state):
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)

    def private_places(self) -> tuple[Path, ...]:
        """The folders whose content must stay private (``doctor`` checks them and everything inside)."""
        return (self.logs,)
