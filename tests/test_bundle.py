"""Task bundles: deterministic, content-addressed, safe to unpack."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from supervisor.scaleout.bundle import BundleError, extract_bundle, make_bundle


def _task(folder: Path) -> Path:
    (folder / "Output").mkdir(parents=True)
    (folder / "main.py").write_text("def main():\n    return 'hi'\n\ndef initialize():\n    return 'ok'\n")
    (folder / "config.ini").write_text("[Frequency]\nEveryXMinutes = 1\n")
    (folder / "requirements.txt").write_text("")
    (folder / "helper.py").write_text("X = 1\n")
    (folder / "Output" / "result.csv").write_text("big data\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0junk")
    (folder / ".env").write_text("TOKEN=secret-value\n")
    return folder


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(tar.getnames())


def test_bundle_leaves_out_output_caches_and_secrets(tmp_path: Path) -> None:
    bundle = make_bundle(_task(tmp_path / "T"))
    assert _names(bundle.data) == ["config.ini", "helper.py", "main.py", "requirements.txt"]


def test_same_content_same_digest_whatever_the_times(tmp_path: Path) -> None:
    a = make_bundle(_task(tmp_path / "A"))
    b_dir = _task(tmp_path / "B")
    (b_dir / "main.py").touch()  # new mtime, same bytes
    (b_dir / "Output" / "other.txt").write_text("output never counts")
    assert make_bundle(b_dir).digest == a.digest
    (b_dir / "helper.py").write_text("X = 2\n")
    assert make_bundle(b_dir).digest != a.digest


def test_extract_round_trip_keeps_worker_output(tmp_path: Path) -> None:
    bundle = make_bundle(_task(tmp_path / "src"))
    target = tmp_path / "worker" / "Tasks" / "T"
    target.mkdir(parents=True)
    (target / "Output").mkdir()
    (target / "Output" / "kept.txt").write_text("worker output")
    (target / "stale.py").write_text("removed by the new bundle")
    extract_bundle(bundle.data, target, digest=bundle.digest)
    assert (target / "helper.py").read_text() == "X = 1\n"
    assert not (target / "stale.py").exists()
    assert (target / "Output" / "kept.txt").read_text() == "worker output"


def test_extract_refuses_a_wrong_digest(tmp_path: Path) -> None:
    bundle = make_bundle(_task(tmp_path / "src"))
    with pytest.raises(BundleError, match="corrupt or tampered"):
        extract_bundle(bundle.data, tmp_path / "dst", digest="0" * 64)


def test_extract_refuses_path_traversal(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escape.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    data = buffer.getvalue()
    import hashlib

    with pytest.raises(BundleError, match="outside the task folder"):
        extract_bundle(data, tmp_path / "dst", digest=hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "escape.py").exists()


def test_extract_keeps_the_workers_own_secrets(tmp_path: Path) -> None:
    bundle = make_bundle(_task(tmp_path / "src"))
    target = tmp_path / "worker" / "Tasks" / "T"
    target.mkdir(parents=True)
    (target / ".env").write_text("TOKEN=worker-secret\n")
    extract_bundle(bundle.data, target, digest=bundle.digest)
    assert (target / ".env").read_text() == "TOKEN=worker-secret\n"
