"""[Output] retention, the I/O half, on a small tmpfs mounted by the test: old files go, newer ones stay, and
everything planted to be left alone is: symlinks to files and folders outside Output/ (and their targets),
a FIFO, a folder that was empty before, folders that still hold files, Output/ itself, an Output/ that is a
symlink, and a folder swapped for a symlink between the listing and the removal."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from supervisor.execution.pruning import prune_output
from supervisor.execution.retention import DAY_S
from supervisor.model import Retention

pytestmark = pytest.mark.timeout(60)

NOW = 1_800_000_000.0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs at a fresh folder, always unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "fs"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def plant(path: Path, *, age_days: float, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = NOW - age_days * DAY_S
    os.utime(path, (when, when))
    return path


def old_link(link: Path, target: Path) -> None:
    link.symlink_to(target)
    when = NOW - 400 * DAY_S
    os.utime(link, (when, when), follow_symlinks=False)  # the link itself is old too: still never removed


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def home(tmpfs: Path) -> tuple[Path, Path]:
    """Output/ with old and new files, nested folders, symlinks out, a FIFO; and a folder outside it."""
    outside = tmpfs / "outside"
    for name in ("victim.txt", "d/old.txt"):
        plant(outside / name, age_days=365)
    out = tmpfs / "Tasks" / "t" / "Output"
    plant(out / "old.log", age_days=10, size=1000)
    plant(out / "new.log", age_days=1)
    plant(out / "nested" / "deep" / "old.bin", age_days=20, size=500)
    plant(out / "mixed" / "old.csv", age_days=30, size=30)
    plant(out / "mixed" / "new.csv", age_days=0.5)
    (out / "was-empty").mkdir()
    old_link(out / "link-to-file", outside / "victim.txt")
    old_link(out / "link-to-folder", outside / "d")
    old_link(out / "mixed" / "dangling", tmpfs / "nowhere")
    os.mkfifo(out / "pipe")
    return out, outside


def test_old_files_go_and_everything_planted_stays(home: tuple[Path, Path]) -> None:
    out, outside = home
    outside_before = tree(outside)
    result = prune_output(out, Retention(keep_days=7), now=NOW)
    assert (result.removed, result.freed, result.folders, result.kept) == (3, 1530, 2, 2), result
    assert result.problems == () and not result.stopped and result.skipped is None
    assert tree(out) == {
        "new.log",
        "mixed",
        "mixed/new.csv",
        "mixed/dangling",
        "was-empty",
        "link-to-file",
        "link-to-folder",
        "pipe",
    }, "nested/deep became empty and went (both levels); mixed still holds files; was-empty was empty before"
    assert tree(outside) == outside_before, "nothing outside Output/ was touched through a symlink"
    assert (out / "link-to-file").is_symlink() and (out / "link-to-folder").is_symlink()
    assert out.is_dir(), "Output/ itself is never removed"


def test_keep_files_and_keep_mb_count_only_regular_files(home: tuple[Path, Path]) -> None:
    out, outside = home
    result = prune_output(out, Retention(keep_files=1), now=NOW)
    assert (result.removed, result.kept) == (4, 1)
    assert {p.name for p in out.rglob("*") if p.is_file() and not p.is_symlink()} == {"new.csv"}
    assert (outside / "victim.txt").exists() and (outside / "d" / "old.txt").exists()
    plant(out / "big1", age_days=3, size=3 * 1024 * 1024)
    plant(out / "big2", age_days=2, size=3 * 1024 * 1024)
    result = prune_output(out, Retention(keep_mb=4), now=NOW)
    assert result.removed == 1 and result.freed == 3 * 1024 * 1024
    assert not (out / "big1").exists() and (out / "big2").exists() and (out / "mixed" / "new.csv").exists()


def test_an_output_folder_that_is_a_symlink_is_left_alone(tmpfs: Path) -> None:
    real = tmpfs / "elsewhere"
    plant(real / "ancient.txt", age_days=999)
    task = tmpfs / "Tasks" / "t"
    task.mkdir(parents=True)
    (task / "Output").symlink_to(real)
    result = prune_output(task / "Output", Retention(keep_days=1), now=NOW)
    assert result.skipped is not None and "symlink" in result.skipped and result.removed == 0
    assert (real / "ancient.txt").exists()
    missing = prune_output(tmpfs / "Tasks" / "none" / "Output", Retention(keep_days=1), now=NOW)
    assert missing.skipped is not None and missing.removed == 0


def test_a_folder_swapped_for_a_symlink_mid_prune_is_not_followed(tmpfs: Path) -> None:
    out = tmpfs / "Output"
    plant(out / "a-first.txt", age_days=50)
    plant(out / "sub" / "old.txt", age_days=40)
    bait = tmpfs / "bait"
    plant(bait / "old.txt", age_days=40)  # the same name the listing saw under sub/
    calls: list[int] = []

    def busy() -> bool:
        # Called before each unlink: before the first one, swap sub/ for a symlink to the bait folder.
        if not calls:
            (out / "sub").rename(tmpfs / "sub-moved")
            (out / "sub").symlink_to(bait)
        calls.append(1)
        return False

    result = prune_output(out, Retention(keep_days=1), now=NOW, busy=busy)
    assert result.removed == 1 and not (out / "a-first.txt").exists()
    assert (bait / "old.txt").exists(), "the symlink that replaced sub/ was not followed"
    assert (tmpfs / "sub-moved" / "old.txt").exists() and (out / "sub").is_symlink()


def test_a_file_replaced_after_the_listing_is_not_removed(tmpfs: Path) -> None:
    out = tmpfs / "Output"
    plant(out / "a.txt", age_days=50)
    plant(out / "b.txt", age_days=40)

    def busy() -> bool:
        if (out / "b.txt").exists() and not (out / "b.txt").is_symlink():
            (out / "b.txt").unlink()
            (out / "b.txt").symlink_to(tmpfs / "target")  # same name, now a symlink
        return False

    plant(tmpfs / "target", age_days=40)
    result = prune_output(out, Retention(keep_days=1), now=NOW, busy=busy)
    assert result.removed == 1 and (out / "b.txt").is_symlink() and (tmpfs / "target").exists()


def test_pruning_stops_once_a_run_of_the_task_is_in_flight(tmpfs: Path) -> None:
    out = tmpfs / "Output"
    for i in range(5):
        plant(out / f"f{i}", age_days=10 + i)
    answers = iter([False, False, True])
    result = prune_output(out, Retention(keep_days=1), now=NOW, busy=lambda: next(answers, True))
    assert result.stopped and result.removed == 2 and result.kept == 3
    assert "stopped early" in result.describe()
