"""Task discovery: scan ``Tasks/`` into content hashes, diff two scans, statically check a main.py.

Reconcile, don't react: file events are only hints; the loop rescans and compares what it
sees with what is loaded. A scan therefore reports *content*, not events: three hashes per folder, so the
loop can tell a config edit (reschedule) from a code edit (re-initialize) from a requirements edit (new env).

Policies:

- A task is every direct sub-folder of Tasks/ that is task content (``paths.is_task_content``: not hidden,
  not ``__pycache__``, not an editor's temp name; the watcher wakes on the same rule). A folder without
  main.py or config.ini is still reported (with a None hash) so the caller can say it is incomplete.
- Code is every ``*.py`` in the folder tree (helpers are code: ``import Tasks.NAME.helper``), except
  under the task's ``Output/``, ``__pycache__/``, hidden folders, virtualenvs (a folder holding
  ``pyvenv.cfg``) and editor temp files. Writing output or byte-compiling never looks like an edit.
- Scanning never raises for an unreadable file: the hash records that it could not be read (stable across
  scans, so it does not re-trigger every rescan) and loading the file reports the real cause.
- Scanning never blocks and never reads without bound: every file goes through :mod:`.safefile` (regular
  files only, non-blocking open, size caps), so a FIFO main.py or a huge helper is a recorded "unsafe" hash,
  and :func:`check_task_source` or the config reader says what is wrong with it.
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .. import safefile
from ..errors import TaskLoadError
from ..paths import CONFIG_FILE, MAIN_FILE, REQUIREMENTS_FILE, is_task_content
from ..safefile import UnsafeFileError


@dataclass(frozen=True)
class TaskFolder:
    """What one scan saw in one Tasks/NAME folder."""

    name: str
    path: Path
    config_hash: str | None  # sha256 of config.ini's bytes; None if there is no config.ini
    code_hash: str | None  # sha256 over every *.py (relative path + bytes); None if there is no main.py
    requirements_hash: str  # sha256 of requirements.txt's bytes; a missing file hashes as empty

    @property
    def missing(self) -> tuple[str, ...]:
        """The files a task needs that are not there yet (whether they parse is for config/check_task_source)."""
        return tuple(
            name for name, digest in ((MAIN_FILE, self.code_hash), (CONFIG_FILE, self.config_hash)) if digest is None
        )

    @property
    def fingerprint(self) -> str:
        """One value for the folder's whole content, so a broken folder is reported once per version."""
        joined = "\0".join((self.config_hash or "-", self.code_hash or "-", self.requirements_hash))
        return hashlib.sha256(joined.encode()).hexdigest()


@dataclass(frozen=True)
class TaskDiff:
    """How a new scan differs from an old one; every tuple is sorted by task name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    config_changed: tuple[str, ...] = ()
    code_changed: tuple[str, ...] = ()
    requirements_changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.config_changed or self.code_changed or self.requirements_changed)


def scan_tasks(tasks_dir: Path) -> dict[str, TaskFolder]:
    """Every task folder in ``tasks_dir`` by name. A missing ``tasks_dir`` holds no tasks.

    Raises TaskLoadError only when ``tasks_dir`` exists but cannot be listed: reporting "no tasks" then
    would make the caller unload every running task because of a transient permission problem.
    """
    try:
        entries = sorted(os.scandir(tasks_dir), key=lambda entry: entry.name)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TaskLoadError(f"{tasks_dir}: cannot list task folders: {exc.strerror or exc}") from None
    found: dict[str, TaskFolder] = {}
    for entry in entries:
        if not is_task_content((entry.name,)) or not _is_dir(entry):
            continue
        folder = Path(entry.path)
        found[entry.name] = TaskFolder(
            name=entry.name,
            path=folder,
            config_hash=_file_hash(folder / CONFIG_FILE, max_bytes=safefile.CONFIG_MAX_BYTES),
            code_hash=_code_hash(folder),
            requirements_hash=(
                _file_hash(folder / REQUIREMENTS_FILE, max_bytes=safefile.REQUIREMENTS_MAX_BYTES) or _EMPTY_HASH
            ),
        )
    return found


def task_names(tasks_dir: Path) -> list[str]:
    """The names :func:`scan_tasks` finds (same rules, same errors, sorted), without hashing any file: what
    a status read needs, at the cost of one directory listing."""
    try:
        entries = sorted(os.scandir(tasks_dir), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TaskLoadError(f"{tasks_dir}: cannot list task folders: {exc.strerror or exc}") from None
    return [entry.name for entry in entries if is_task_content((entry.name,)) and _is_dir(entry)]


def diff_tasks(old: Mapping[str, TaskFolder], new: Mapping[str, TaskFolder]) -> TaskDiff:
    """Pure comparison of two scans. A task that is added or removed is not also listed as changed."""
    common = sorted(old.keys() & new.keys())
    return TaskDiff(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        config_changed=tuple(n for n in common if old[n].config_hash != new[n].config_hash),
        code_changed=tuple(n for n in common if old[n].code_hash != new[n].code_hash),
        requirements_changed=tuple(n for n in common if old[n].requirements_hash != new[n].requirements_hash),
    )


def check_task_source(path: Path, *, task: str) -> None:
    """Check a task's main.py without executing it: it must compile and bind a top-level ``main``.

    ``path`` is the task folder (or its main.py). A top-level ``def main`` counts, as does a name ``main``
    bound at module level by an import or an assignment (``from .impl import main``). ``async def main``
    is refused: calling it only creates a coroutine, so the run would "succeed" without doing anything.
    A missing initialize() is not an error here. Raises TaskLoadError naming task, file and cause.
    """
    main_py = path / MAIN_FILE if path.name != MAIN_FILE else path
    shown = os.path.abspath(main_py)
    prefix = f"task '{task}': {shown}"
    try:
        source = safefile.read_bytes(main_py, max_bytes=safefile.CODE_MAX_BYTES)
    except FileNotFoundError:
        raise TaskLoadError(f"{prefix}: file does not exist") from None
    except UnsafeFileError as exc:
        raise TaskLoadError(f"task '{task}': {exc}") from None
    try:
        tree = ast.parse(source, filename=shown)
        # ast.parse accepts some code the compiler rejects ('return' outside a function, ...).
        compile(tree, shown, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = f"line {exc.lineno}: " if exc.lineno else ""
        raise TaskLoadError(f"{prefix}: {line}{exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; absurdly deep nesting
        raise TaskLoadError(f"{prefix}: cannot compile: {exc}") from None
    binding = _main_binding(tree.body)
    if binding is None:
        raise TaskLoadError(f"{prefix}: no function main() defined")
    if isinstance(binding, ast.AsyncFunctionDef):
        raise TaskLoadError(
            f"{prefix}: line {binding.lineno}: main() is 'async def'; "
            "it must be a plain function (call asyncio.run() inside it)"
        )


# --- helpers -------------------------------------------------------------------------------------------

_EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a linked task folder is a task folder
    except OSError:
        return False


def _unreadable(exc: OSError) -> str:
    """A stable stand-in hash for a folder that exists but cannot be listed."""
    return f"unreadable:{exc.errno}"


def _unsafe(exc: UnsafeFileError) -> str:
    """A stand-in hash for a file that must not be read: its kind, plus size and mtime when too large (so
    editing an oversized file is noticed, while a FIFO does not re-trigger every rescan)."""
    if exc.kind != "too-large":
        return f"unsafe:{exc.kind}"
    try:
        st = os.stat(exc.path)
    except OSError:
        return "unsafe:too-large"
    return f"unsafe:too-large:{st.st_size}:{st.st_mtime_ns}"


def _file_hash(path: Path, *, max_bytes: int) -> str | None:
    """sha256 of the file's bytes; None when it does not exist."""
    try:
        return hashlib.sha256(safefile.read_bytes(path, max_bytes=max_bytes)).hexdigest()
    except FileNotFoundError:
        return None
    except UnsafeFileError as exc:
        return _unsafe(exc)


def _code_hash(folder: Path) -> str | None:
    """sha256 over (relative path, content hash) of every code file, in sorted path order."""
    if not os.path.lexists(folder / MAIN_FILE):
        return None  # anything named main.py counts as present: reading it says what is wrong with it
    files: list[tuple[bytes, str]] = []

    def walk_error(exc: OSError) -> None:
        # An unlistable sub-folder still counts, so it changes the hash instead of hiding quietly.
        where = os.path.relpath(exc.filename, folder) if exc.filename else "?"
        files.append((os.fsencode(where), _unreadable(exc)))

    top = os.fspath(folder)
    for root, dirs, names in os.walk(top, onerror=walk_error):
        # The same rule the watcher wakes on (paths.is_task_content), on the path below Tasks/.
        below = (folder.name, *Path(os.path.relpath(root, top)).parts)  # Path(".").parts is ()
        dirs[:] = [
            d for d in dirs if is_task_content((*below, d)) and not os.path.exists(os.path.join(root, d, "pyvenv.cfg"))
        ]
        for name in names:
            if not name.endswith(".py") or not is_task_content((*below, name)):
                continue
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            try:
                digest = hashlib.sha256(safefile.read_bytes(Path(full), max_bytes=safefile.CODE_MAX_BYTES)).hexdigest()
            except FileNotFoundError:
                continue  # deleted between the listing and the read: the next scan sees the folder as it is
            except UnsafeFileError as exc:
                digest = _unsafe(exc)
            files.append((os.fsencode(rel), digest))
    total = hashlib.sha256()
    for rel_bytes, digest in sorted(files):
        # The path is NUL-terminated and the digest fixed-form, so no two file lists hash alike.
        total.update(rel_bytes + b"\0" + digest.encode() + b"\n")
    return total.hexdigest()


def _main_binding(body: list[ast.stmt]) -> ast.AST | None:
    """The last module-level statement that binds ``main``, looking into top-level if/try/with blocks."""
    found: ast.AST | None = None
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main":
            found = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name.split(".")[0]) == "main" for alias in node.names):
                found = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "main" for t in targets):
                found = node
        else:
            for block in _nested_bodies(node):
                inner = _main_binding(block)
                if inner is not None:
                    found = inner
    return found


def _nested_bodies(node: ast.stmt) -> list[list[ast.stmt]]:
    """Statement blocks that run at module level when ``node`` does (if/else, try/except, with)."""
    if isinstance(node, (ast.If, ast.With)):
        return [node.body, getattr(node, "orelse", [])]
    if isinstance(node, _TRY_NODES):
        tried: ast.Try = node  # type: ignore[assignment]  # ast.TryStar has the same fields
        return [tried.body, *(handler.body for handler in tried.handlers), tried.orelse, tried.finalbody]
    return []


# ast.TryStar (try/except*) exists from Python 3.11 on.
_TRY_NODES: tuple[type[ast.stmt], ...] = tuple(
    node for node in (ast.Try, getattr(ast, "TryStar", None)) if node is not None
)
