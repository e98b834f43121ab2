"""One safe way to read a file a user put in a task folder (config.ini, main.py, helpers, requirements).

A task folder is user input, and so is every file kind in it. Reading must never block the caller, never
read without bound, and never fail with anything but one error that names the file and the cause.

Policy:

- ``lstat`` first. A symlink is followed (a config.ini linked to a shared one is a normal setup), but only
  when it leads to a regular file; a symlink loop or a dangling link is an error naming the cause.
- Regular files only: a FIFO, socket, character or block device or directory is refused *before* it is
  opened, because opening a FIFO for reading blocks until a writer appears and reading ``/dev/zero`` never
  ends.
- The open is ``O_NONBLOCK`` anyway (the path may be swapped for a FIFO between the check and the open) and
  the opened file is checked again with ``fstat``.
- A size cap per file kind: more bytes than the cap is an error that states the cap; the read itself never
  takes more than cap + 1 bytes, even when the file grows while being read.
- A missing file raises the ordinary ``FileNotFoundError``: callers decide whether missing is fine.
- Decoding errors name the byte offset and the line (:func:`decode_text`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
CONFIG_MAX_BYTES = 1 * MIB  # config.ini, taskautomation.ini
REQUIREMENTS_MAX_BYTES = 1 * MIB  # requirements.txt and the files it includes with -r / -c
CODE_MAX_BYTES = 16 * MIB  # main.py and every helper .py

_CHUNK = 256 * KIB


class UnsafeFileError(Exception):
    """A user file that exists but must not or cannot be read.

    ``kind`` is a short stable word (``fifo``, ``directory``, ``too-large``, ``symlink-loop``, ...) that a
    fingerprint may record; ``str()`` is ``PATH: reason``. Callers re-raise it as their own error family
    member with the task name in front.
    """

    def __init__(self, path: Path, reason: str, *, kind: str) -> None:
        super().__init__(f"{os.path.abspath(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason
        self.kind = kind


def describe_mode(mode: int) -> tuple[str, str]:
    """(kind, words) for a file type that is not a regular file."""
    for test, kind, words in (
        (stat.S_ISFIFO, "fifo", "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket", "a socket"),
        (stat.S_ISCHR, "char-device", "a character device"),
        (stat.S_ISBLK, "block-device", "a block device"),
        (stat.S_ISDIR, "directory", "a directory"),
    ):
        if test(mode):
            return kind, words
    return "special", "a special file"


def human_size(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} bytes"


def check_regular(path: Path) -> os.stat_result:
    """The stat of the regular file ``path`` names (a symlink to one is followed); never opens it.

    Raises FileNotFoundError when there is nothing at ``path`` and UnsafeFileError for everything that is
    not a readable-looking regular file.
    """
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        raise
    except NotADirectoryError:
        raise FileNotFoundError(errno.ENOENT, "a parent is not a directory", os.fspath(path)) from None
    except OSError as exc:
        raise _os_error(path, exc) from None
    if stat.S_ISLNK(link.st_mode):
        try:
            target = os.stat(path)
        except FileNotFoundError:
            raise UnsafeFileError(
                path, f"is a symlink to {_link_target(path)}, which does not exist", kind="dangling-symlink"
            ) from None
        except OSError as exc:
            raise _os_error(path, exc) from None
    else:
        target = link
    if not stat.S_ISREG(target.st_mode):
        kind, words = describe_mode(target.st_mode)
        via = f" (through a symlink to {_link_target(path)})" if target is not link else ""
        raise UnsafeFileError(path, f"is {words}{via}, not a regular file", kind=kind)
    return target


def read_bytes(path: Path, *, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them (see the module policy)."""
    before = check_regular(path)
    if before.st_size > max_bytes:
        raise _too_large(path, before.st_size, max_bytes)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # swapped between the check and the open
            kind, words = describe_mode(opened.st_mode)
            raise UnsafeFileError(path, f"is {words}, not a regular file", kind=kind)
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            except BlockingIOError:  # only a non-regular file can say this; fstat above says it is not one
                raise UnsafeFileError(path, "would block while reading", kind="blocking") from None
            except OSError as exc:
                raise _os_error(path, exc) from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(path, max(total, opened.st_size), max_bytes)
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 text (a leading BOM is dropped: Windows editors write one); errors name the byte and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnsafeFileError(
            path, f"line {line}: not valid UTF-8 (byte offset {exc.start}: {exc.reason})", kind="encoding"
        ) from None


def read_text(path: Path, *, max_bytes: int) -> str:
    """:func:`read_bytes` then :func:`decode_text`."""
    return decode_text(read_bytes(path, max_bytes=max_bytes), path)


# --- helpers -------------------------------------------------------------------------------------------


def _too_large(path: Path, size: int, max_bytes: int) -> UnsafeFileError:
    return UnsafeFileError(path, f"is too large ({size} bytes; the limit is {human_size(max_bytes)})", kind="too-large")


def _link_target(path: Path) -> str:
    try:
        return repr(os.readlink(path))
    except OSError:
        return "?"


def _os_error(path: Path, exc: OSError) -> UnsafeFileError:
    if exc.errno == errno.ELOOP:
        return UnsafeFileError(path, "is a symlink loop (too many levels of symbolic links)", kind="symlink-loop")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnsafeFileError(path, f"cannot read: {exc.strerror}", kind="permission")
    if exc.errno == errno.ENAMETOOLONG:
        return UnsafeFileError(path, "path is too long", kind="name-too-long")
    return UnsafeFileError(path, f"cannot read: {exc.strerror or exc}", kind=f"errno-{exc.errno}")
