"""The loop's self-healing of envs (fake clock, fake executor, fake env builder): an env whose interpreter is
gone is found before a spawn, rebuilt once (shared by the tasks on it), and the task shows why meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tests.support.loop_harness import KEY_A, Harness, started_harness

from supervisor.events import EnvBuilt
from supervisor.model import RunMode

pytestmark = pytest.mark.timeout(30)
GONE = f"env {KEY_A}: its interpreter /envs/{KEY_A}/bin/python points to /usr/bin/python3.11, which is gone"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with started_harness(tmp_path / "home") as harness:
        yield harness


def _ran_once(h: Harness) -> None:
    """Task 't' (every minute) exists, has run once on KEY_A and waits for its next slot."""
    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.settle()


def _break(h: Harness) -> None:
    h.envs.gone[KEY_A] = GONE
    h.envs.ready.discard(KEY_A)  # as EnvManager.is_ready says for such an env


def _repair(h: Harness, *, error: str | None = None) -> None:
    if error is None:
        h.envs.gone.clear()
        h.envs.ready.add(KEY_A)
    h.post(EnvBuilt(KEY_A, error=error))
    h.settle()


def test_a_vanished_interpreter_is_rebuilt_once_for_all_tasks_on_it(h: Harness) -> None:
    h.write("one", every=1)
    h.write("two", every=1)
    h.settle()
    for name in ("one", "two"):
        h.executor.finish(h.executor.live_main(name))
    h.settle()
    mains_before = len(h.executor.mains())
    rows_before = {name: len(h.rows(name)) for name in ("one", "two")}
    _break(h)
    h.tick(60)
    assert h.envs.builds == [KEY_A], "one rebuild, shared by both tasks"
    for name in ("one", "two"):
        task = h.task(name)
        assert task["state"] == "env-building"
        assert task["error"] == f"task {name!r}: {GONE}; rebuilding it"
        assert len(h.rows(name)) == rows_before[name], "no failed run is recorded for a known-broken env"
    assert len(h.executor.mains()) == mains_before, "nothing is spawned on the broken env"
    h.tick(60)
    assert h.envs.builds == [KEY_A], "still one rebuild while it is in progress"

    _repair(h)
    for name in ("one", "two"):
        assert h.task(name)["state"] in ("scheduled", "running") and h.task(name)["error"] is None
    inits = [r for r in h.executor.launched if r.mode is RunMode.INITIALIZE]
    assert [r.task for r in inits[-2:]] == ["one", "two"], "initialize() again in the rebuilt env"
    h.tick(60)
    assert len(h.executor.mains()) > mains_before


def test_a_failed_rebuild_leaves_the_task_env_failed_with_the_reason(h: Harness) -> None:
    _ran_once(h)
    _break(h)
    h.tick(60)
    _repair(h, error="task 't': cannot create the virtualenv: no python")
    assert h.task("t")["state"] == "env-failed"
    assert "no python" in h.task("t")["error"]
    h.tick(60)
    assert h.envs.builds == [KEY_A], "not rebuilt again and again"


def test_a_spawn_that_fails_because_the_interpreter_just_vanished_heals_too(h: Harness) -> None:
    _ran_once(h)
    from supervisor.errors import SpawnError

    # The interpreter disappears between the pre-spawn check and the spawn itself.
    class Vanishing(SpawnError):
        pass

    original = h.executor.launch

    def launch(request):  # type: ignore[no-untyped-def]
        _break(h)
        h.executor.launch = original
        raise Vanishing(f"task 't': cannot start {request.python}: No such file or directory")

    h.executor.launch = launch  # type: ignore[method-assign]
    h.tick(60)
    assert h.envs.builds == [KEY_A]
    assert h.task("t")["state"] == "env-building"
    assert h.rows("t")[-1].message.endswith("No such file or directory")  # the failed spawn is on record


def test_healthy_again_after_a_rebuild_a_later_breakage_heals_again(h: Harness) -> None:
    _ran_once(h)
    for _ in range(2):
        _break(h)
        h.tick(60)
        _repair(h)
        live = [r for r in h.executor.live.values() if r.mode is RunMode.MAIN]
        for request in live:
            h.executor.finish(request.run_id)
        h.settle()
    assert h.envs.builds == [KEY_A, KEY_A]
    assert h.task("t")["state"] in ("scheduled", "running")


def test_a_rebuild_that_comes_out_broken_is_not_repeated(h: Harness) -> None:
    _ran_once(h)
    _break(h)
    h.tick(60)
    h.envs.ready.add(KEY_A)  # the build reports success, but the interpreter is still gone
    h.post(EnvBuilt(KEY_A))
    h.settle()
    assert h.envs.builds == [KEY_A]
    assert h.task("t")["state"] == "error"
    assert "rebuilt once already" in h.task("t")["error"]


def test_a_broken_serving_env_while_a_new_one_builds_waits_for_the_new_one(h: Harness) -> None:
    from tests.support.loop_harness import KEY_B

    h.write("t", every=1)
    h.settle()
    h.executor.finish(h.executor.live_main("t"))
    h.write("t", every=1, requirements="b")
    h.settle()
    assert h.envs.builds == [KEY_B]
    _break(h)  # the serving env KEY_A loses its interpreter while KEY_B is being built
    h.tick(60)
    assert h.envs.builds == [KEY_B], "no rebuild of the env the requirements no longer want"
    assert h.task("t")["state"] == "env-building"
    assert h.task("t")["error"].endswith(f"waiting for its new env {KEY_B}")
    h.envs.ready.add(KEY_B)
    h.post(EnvBuilt(KEY_B))
    h.settle()
    h.tick(60)
    assert h.executor.mains("t")[-1].env_key == KEY_B
