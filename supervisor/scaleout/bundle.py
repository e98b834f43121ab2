"""Task bundles: a task folder as a reproducible tar, addressed by its sha256.

Policy:
* A bundle holds what a run needs from the task folder and nothing the task produces: ``Output/``, caches
  (``__pycache__``, ``.pytest_cache``, ``.mypy_cache``), editor noise and symlinks are left out; ``.env`` is
  left out too: secrets never travel through Redis; a worker's own ``Tasks/NAME/.env`` (and its home's
  ``.env``) are kept across bundle versions and give the run its secrets there.
* The tar is deterministic (sorted names, zeroed times and owners, fixed modes), so unchanged content gives
  the same digest on every supervisor and is uploaded at most once (``SET NX`` on its content key).
* Extraction refuses members that would land outside the target folder and anything but files and folders.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

BUNDLE_MAX_BYTES = 64 * 1024 * 1024  # a task folder is code, not data; Output/ is never bundled
SKIPPED_DIRS = frozenset({"Output", "__pycache__", ".pytest_cache", ".mypy_cache", ".git", ".venv"})
SKIPPED_FILES = frozenset({".env", ".DS_Store"})
KEY_PREFIX = "taskautomation:bundle:"
KEPT_ON_WORKER = ("Output", ".env")


class BundleError(Exception):
    """A folder that cannot be bundled, or a bundle that cannot be unpacked safely."""


@dataclass(frozen=True)
class Bundle:
    digest: str  # sha256 of ``data``
    data: bytes

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.digest


def _members(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            path = Path(root, name)
            if name in SKIPPED_FILES or name.endswith((".pyc", ".swp", "~")) or path.is_symlink():
                continue
            if path.is_file():
                found.append(path)
    return found


def make_bundle(folder: Path, *, max_bytes: int = BUNDLE_MAX_BYTES) -> Bundle:
    """Tar ``folder`` deterministically (see module policy)."""
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _members(folder):
            rel = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise BundleError(
                    f"{folder}: more than {max_bytes} bytes of files to bundle (Output/ is left "
                    "out; keep data out of the task folder)"
                )
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return Bundle(digest=hashlib.sha256(data).hexdigest(), data=data)


def extract_bundle(data: bytes, target: Path, *, digest: str) -> None:
    """Unpack a bundle into ``target`` (replacing what is there), after checking its digest."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise BundleError(f"bundle {digest[:12]}: content hash is {actual[:12]}: corrupt or tampered")
    staging = target.with_name(f".{target.name}.unpack-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    raise BundleError(f"bundle {digest[:12]}: {member.name!r} is not a regular file")
                dest = (staging / member.name).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise BundleError(f"bundle {digest[:12]}: {member.name!r} points outside the task folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                dest.write_bytes(source.read())
                dest.chmod(member.mode & 0o755)
        # Output/ and .env belong to the worker's copy of the task (its output, its secrets): keep them.
        for kept in KEPT_ON_WORKER:
            if (target / kept).exists() and not (target / kept).is_symlink():
                (target / kept).rename(staging / kept)
        (staging / "Output").mkdir(exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
