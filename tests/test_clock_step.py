"""A real supervisor whose wall clock steps back an hour (libfaketime) keeps its tasks' cadence.

The loop notices the step (wall vs monotonic time) and recomputes every due time: without that, a due time
computed before the step lies an hour ahead and the task would not run again for an hour. The interval still
counts in real time from the last start: the first run after the step is due one interval after the last one
before it, whenever the step came and however long its detection took. Monotonic time is left alone, as the
kernel does on a real step.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs Debian's faketime package (.ci/system-packages.txt)"),
]


def test_a_backward_wall_clock_step_does_not_stop_scheduling(home: Path, tmp_path: Path) -> None:
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = dict(
        os.environ,
        LD_PRELOAD=str(LIBFAKETIME),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    write_task(home / "Tasks", "tick", config="[Frequency]\nEveryXMinutes = 0.05\n")  # every 3 s
    with SupervisorProcess(home, env=env) as sup:
        ok_runs = lambda: [r for r in sup.history("tick") if r["outcome"] == "ok"]  # noqa: E731
        wait_for(lambda: len(ok_runs()) >= 2, timeout=40, what="two runs before the step")
        first_started = datetime.fromisoformat(min(r["started"] for r in ok_runs()))
        stepped = lambda: [  # noqa: E731 - the runs after the step carry the stepped wall-clock time
            r for r in ok_runs() if datetime.fromisoformat(r["started"]) < first_started - timedelta(minutes=30)
        ]
        offset.write_text("-1h\n")
        wait_for(
            lambda: len(stepped()) >= 2,
            timeout=40,
            what=f"two runs after the wall clock stepped back an hour\n{sup.log()[-2000:]}",
        )
        runs = sup.history("tick")
    assert "skipped" not in {r["outcome"] for r in runs}
    # By due time: a run due just before the step may have started just after it.
    dues = [datetime.fromisoformat(r["due"]) for r in runs]
    before = max(due for due in dues if due >= first_started - timedelta(minutes=30))
    after = min(due for due in dues if due < first_started - timedelta(minutes=30))
    gap = (after - before).total_seconds() + 3600
    assert gap == pytest.approx(3, abs=0.5), f"one interval (3 s) between the dues across the step, not {gap:.2f} s"
