"""The memory start gate against the real machine: a real memory hog, held in a memory cgroup of the test's
own (so a bug can never push this machine into swap), closes the gate of a real supervisor's task; the due run
waits as ``queued`` with the gate and the current value in ``why``, and starts once the hog is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.caps import outer_cap
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task

from supervisor.scheduling.gates import HostProbe

pytestmark = pytest.mark.timeout(180)

# Allocates and touches MB MiB, says so by creating READY, then holds it until killed.
HOG = """
import sys, time
from pathlib import Path
(Path(sys.argv[1]) / "cgroup.procs").write_text(str(__import__("os").getpid()))
block = bytearray(int(sys.argv[2]) << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
Path(sys.argv[3]).touch()
time.sleep(600)
"""


def _free_mb() -> float:
    free = HostProbe().free_memory_mb()
    assert free is not None, "/proc/meminfo has no MemAvailable on this machine"
    return free


def test_a_real_memory_hog_holds_a_gated_run_in_the_queue_until_it_is_gone(home: Path, tmp_path: Path) -> None:
    free = _free_mb()
    hog_mb = int(min(1024, free / 4))  # small machines get a smaller hog; the margin is half of it either way
    ready = tmp_path / "hog-ready"
    with outer_cap("memory", {"memory.limit_in_bytes": str((hog_mb + 128) << 20)}) as cap:
        hog = subprocess.Popen([sys.executable, "-c", HOG, str(cap), str(hog_mb), str(ready)])
        try:
            wait_for(ready.exists, timeout=60, what="the hog holding its memory")
            need = int(_free_mb() + hog_mb / 2)  # closed while the hog holds its memory, open once it is gone
            write_task(
                home / "Tasks",
                "gated",
                config=f"[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n"
                f"[Limits]\nStartIfFreeMemoryMB = {need}\n",
            )
            with SupervisorProcess(home) as sup:
                task = wait_for(
                    lambda: (lambda t: t if t.get("state") == "queued" else None)(sup.task_status("gated")),
                    timeout=60,
                    what="the gated run queued",
                )
                assert f"StartIfFreeMemoryMB = {need}" in task["why"] and "MB free" in task["why"], task["why"]
                assert sup.history("gated") == []  # waiting is no outcome: nothing ran, nothing recorded
                hog.kill()
                hog.wait(timeout=30)
                runs = wait_for(lambda: sup.history("gated"), timeout=60, what="the run once the gate opened")
                assert [(r["trigger"], r["outcome"]) for r in runs] == [("startup", "ok")]
        finally:
            hog.kill()
            hog.wait(timeout=30)
