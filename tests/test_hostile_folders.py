"""Hostile task folders against a real supervisor: each is that task's error, and a 3 s canary keeps its cadence.

Every hostile file kind (FIFO main.py, FIFO config.ini, a directory requirements.txt, an unreadable
file, a symlink loop, an oversized file, bad encoding), present at start and hot-added, plus a task folder
whose name is near NAME_MAX (its log file name must still be valid).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Callable

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, wall_clock_offset, without_dac_override, write_task

from supervisor import safefile

pytestmark = pytest.mark.timeout(180)

CANARY_EVERY_S = 3.0
CANARY = "[Frequency]\nEveryXMinutes = 0.05\n"  # 3 s


def _fifo_main(folder: Path) -> None:
    (folder / "main.py").unlink()
    os.mkfifo(folder / "main.py")


def _fifo_config(folder: Path) -> None:
    (folder / "config.ini").unlink()
    os.mkfifo(folder / "config.ini")


def _dir_requirements(folder: Path) -> None:
    (folder / "requirements.txt").unlink()
    (folder / "requirements.txt").mkdir()


def _unreadable_config(folder: Path) -> None:
    (folder / "config.ini").chmod(0)


def _loop_main(folder: Path) -> None:
    (folder / "main.py").unlink()
    (folder / "main.py").symlink_to(folder / "main.py")


def _oversize_main(folder: Path) -> None:
    with open(folder / "main.py", "r+b") as handle:
        handle.truncate(safefile.CODE_MAX_BYTES + 1)  # sparse: no disk used


def _bad_encoding_config(folder: Path) -> None:
    (folder / "config.ini").write_bytes(b"[Frequency]\nEveryXMinutes = 60\n; caf\xe9\n")


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo-main": (_fifo_main, "main.py: is a FIFO (named pipe), not a regular file"),
    "fifo-config": (_fifo_config, "config.ini: is a FIFO (named pipe), not a regular file"),
    "dir-requirements": (_dir_requirements, "requirements.txt: is a directory, not a regular file"),
    "unreadable-config": (_unreadable_config, "config.ini: cannot read: Permission denied"),
    "loop-main": (_loop_main, "main.py: is a symlink loop"),
    "oversize-main": (_oversize_main, "main.py: is too large (16777217 bytes; the limit is 16 MiB)"),
    "bad-encoding-config": (_bad_encoding_config, "config.ini: line 3: not valid UTF-8 (byte offset"),
}


def _make_hostile(tasks: Path, name: str) -> None:
    folder = write_task(tasks, name)
    HOSTILE[name][0](folder)


def _canary_starts(sup: SupervisorProcess) -> list[datetime]:
    return sorted(datetime.fromisoformat(run["started"]) for run in sup.history("canary"))


def _assert_cadence(sup: SupervisorProcess, *, after: int, more: int, offset: float) -> None:
    """The canary completes ``more`` further runs, none of them late by more than an interval.

    ``offset`` is :func:`wall_clock_offset` from before the start: the gaps come from wall-clock ``started``
    times, so a step of the machine's clock meanwhile is taken out of the gap it fell into."""
    runs = wait_for(
        lambda: (lambda s: s if len(s) >= after + more else None)(_canary_starts(sup)),
        timeout=CANARY_EVERY_S * (more + 4) + 20,
        what=f"{more} more canary runs",
    )
    gaps = [(b - a).total_seconds() for a, b in zip(runs, runs[1:])]
    step = wall_clock_offset() - offset
    if step > 1.0:
        gaps[gaps.index(max(gaps))] -= step
    elif step < -1.0:
        # Sorted wall-clock starts across a backward step interleave; the run count above is the check left.
        gaps = [gap for gap in gaps if 0 < gap < CANARY_EVERY_S * (more + 4)]
    # A loop blocked on a FIFO shows as an unbounded gap; the bound is generous for a loaded 2-core machine.
    assert max(gaps) < 2 * CANARY_EVERY_S + 2, gaps


def _assert_errors(sup: SupervisorProcess) -> None:
    for name, (_make, expected) in HOSTILE.items():

        def shows(name: str = name, expected: str = expected) -> bool:
            task = next((t for t in sup.status()["tasks"] if t["name"] == name), {})
            error = task.get("error") or ""
            return expected in error and f"task '{name}'" in error

        wait_for(shows, timeout=60, what=f"{name}: {expected!r} in its status")
        assert expected in sup.log()


@pytest.mark.parametrize("when", ["at-start", "hot-added"])
def test_hostile_files_are_task_errors_and_the_canary_keeps_its_cadence(home: Path, when: str) -> None:
    tasks = home / "Tasks"
    write_task(tasks, "canary", config=CANARY)
    if when == "at-start":
        for name in HOSTILE:
            _make_hostile(tasks, name)
    # Without CAP_DAC_OVERRIDE, so that a mode-0 file is unreadable to the supervisor although it runs as root.
    prefix = tuple(without_dac_override()) if os.geteuid() == 0 else ()
    offset = wall_clock_offset()
    with SupervisorProcess(home, prefix=prefix) as sup:
        wait_for(lambda: len(_canary_starts(sup)) >= 2, timeout=60, what="canary running")
        before = len(_canary_starts(sup))
        if when == "hot-added":
            for name in HOSTILE:
                _make_hostile(tasks, name)
        _assert_errors(sup)
        _assert_cadence(sup, after=before, more=3, offset=offset)
        assert sup.proc is not None and sup.proc.poll() is None
        assert "Traceback" not in sup.log()


def test_task_folder_name_near_name_max_gets_a_valid_log_file(home: Path) -> None:
    long_name = "t" * 200 + "é" * 26  # 252 bytes in UTF-8
    assert len(os.fsencode(long_name)) == 252
    write_task(home / "Tasks", "canary", config=CANARY)
    write_task(home / "Tasks", long_name, config=CANARY)
    with SupervisorProcess(home) as sup:
        wait_for(lambda: len(sup.history(long_name)) >= 2, timeout=60, what="the long-named task runs")
        log = sup.paths.task_log(long_name)
        assert log.exists() and len(os.fsencode(log.name)) <= 255
        assert "[run " in log.read_text()
        assert len(_canary_starts(sup)) >= 1
