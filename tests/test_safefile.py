"""The one safe reader for user files, on real file kinds: FIFOs, sockets, devices, loops, huge files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.helpers import without_dac_override

from supervisor import safefile
from supervisor.config.schema import read_task_config
from supervisor.discovery.scan import check_task_source, scan_tasks
from supervisor.errors import ConfigError, TaskLoadError
from supervisor.safefile import UnsafeFileError

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(30)  # a blocking read would hang: the timeout turns that into a failure


def test_regular_file_and_symlink_to_one_are_read(tmp_path: Path) -> None:
    real = tmp_path / "real.ini"
    real.write_bytes(b"\xef\xbb\xbf[x]\n")
    link = tmp_path / "link.ini"
    link.symlink_to(real)
    assert safefile.read_bytes(real, max_bytes=100) == b"\xef\xbb\xbf[x]\n"
    assert safefile.read_text(link, max_bytes=100) == "[x]\n"  # BOM dropped


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safefile.read_bytes(tmp_path / "absent", max_bytes=10)
    with pytest.raises(FileNotFoundError):  # a parent that is a file is "missing" too
        (tmp_path / "file").write_text("x")
        safefile.read_bytes(tmp_path / "file" / "main.py", max_bytes=10)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "main.py"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFileError, match=r"main\.py: is a FIFO \(named pipe\), not a regular file") as caught:
        safefile.read_bytes(fifo, max_bytes=10)
    assert caught.value.kind == "fifo"


def test_directory_socket_and_device_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        (tmp_path / "zero").symlink_to("/dev/zero")
        cases = {"dir": "directory", "sock": "socket", "zero": "char-device"}
        for name, kind in cases.items():
            with pytest.raises(UnsafeFileError) as caught:
                safefile.read_bytes(tmp_path / name, max_bytes=10)
            assert caught.value.kind == kind, name
        assert "through a symlink to '/dev/zero'" in str(caught.value)
    finally:
        sock.close()


def test_symlink_loop_and_dangling_link_are_named(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UnsafeFileError, match="symlink loop"):
        safefile.read_bytes(tmp_path / "a", max_bytes=10)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafeFileError, match="which does not exist"):
        safefile.read_bytes(tmp_path / "dangling", max_bytes=10)


def test_size_cap_is_stated_and_bounds_the_read(tmp_path: Path) -> None:
    big = tmp_path / "config.ini"
    with open(big, "wb") as handle:
        handle.truncate(safefile.CONFIG_MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(UnsafeFileError, match=r"too large \(1048577 bytes; the limit is 1 MiB\)"):
        safefile.read_bytes(big, max_bytes=safefile.CONFIG_MAX_BYTES)
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 1024)
    assert len(safefile.read_bytes(exact, max_bytes=1024)) == 1024


def test_bad_encoding_names_line_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_bytes(b"six\nca\xe9\n")
    with pytest.raises(UnsafeFileError, match=r"line 2: not valid UTF-8 \(byte offset 6: invalid") as caught:
        safefile.read_text(path, max_bytes=100)
    assert caught.value.kind == "encoding"


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    """In a child without CAP_DAC_OVERRIDE (root reads any file otherwise)."""
    target = tmp_path / "private"
    target.write_text("secret")
    target.chmod(0)
    code = (
        "import sys; from pathlib import Path; from supervisor import safefile\n"
        "try:\n    safefile.read_bytes(Path(sys.argv[1]), max_bytes=10)\n"
        "except safefile.UnsafeFileError as exc:\n    print(exc.kind, exc.reason)\n"
    )
    argv = [sys.executable, "-c", code, str(target)]
    if os.geteuid() == 0:
        argv = [*without_dac_override(), *argv]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=20)
    assert result.stdout.strip() == "permission cannot read: Permission denied", result.stderr


# --- the readers that use it -------------------------------------------------------------------------


def test_config_and_main_fifo_are_the_tasks_errors(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.ini")
    os.mkfifo(tmp_path / "main.py")
    with pytest.raises(ConfigError, match=r"task 'demo': .*config\.ini: is a FIFO"):
        read_task_config(tmp_path / "config.ini", task="demo")
    with pytest.raises(TaskLoadError, match=r"task 'demo': .*main\.py: is a FIFO"):
        check_task_source(tmp_path, task="demo")


def test_oversized_main_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "main.py", "wb") as handle:
        handle.truncate(safefile.CODE_MAX_BYTES + 1)
    with pytest.raises(TaskLoadError, match=r"too large \(16777217 bytes; the limit is 16 MiB\)"):
        check_task_source(tmp_path, task="demo")


def test_scan_never_blocks_or_reads_unbounded_content(tmp_path: Path) -> None:
    """FIFOs, a /dev/zero helper and a huge sparse helper: the scan finishes and records each stably."""
    folder = tmp_path / "Tasks" / "hostile"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "main.py")
    os.mkfifo(folder / "config.ini")
    (folder / "requirements.txt").mkdir()
    (folder / "zero.py").symlink_to("/dev/zero")
    (folder / "loop.py").symlink_to(folder / "loop.py")
    with open(folder / "huge.py", "wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB, sparse
    first = scan_tasks(tmp_path / "Tasks")["hostile"]
    assert first.config_hash == "unsafe:fifo"
    assert first.requirements_hash == "unsafe:directory"
    assert first.code_hash is not None and first.missing == ()
    assert scan_tasks(tmp_path / "Tasks")["hostile"] == first  # stable: no reload on every rescan
