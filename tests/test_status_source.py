"""The one status source: live when the supervisor answers, offline when none does or it is busy (and then the
document says whether a supervisor runs), and a refusal is an error; the real transport
(``ask_supervisor``) says "not running" without a lock holder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytest

from supervisor.errors import ControlError, NotRunningError, TaskAutomationError
from supervisor.history.store import HistoryStore
from supervisor.paths import Paths
from supervisor.query.source import StatusSource
from supervisor.system.control import ask_supervisor

LIVE = {"tasks": [{"name": "a", "state": "running"}], "supervisor": {"pid": 1, "started": "x", "home": "h"}}


def _task(home: Path, name: str) -> None:
    folder = home / "Tasks" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("def main():\n    return 'ok'\n")
    (folder / "config.ini").write_text("[Frequency]\nEveryXMinutes = 5\n")


def _asking(result: dict[str, Any] | Exception) -> Any:
    asked: list[tuple[str, Mapping[str, Any]]] = []

    def ask(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        asked.append((command, args))
        if isinstance(result, Exception):
            raise result
        return result

    ask.asked = asked  # type: ignore[attr-defined]
    return ask


def test_a_live_answer_is_the_supervisors_document(home: Path) -> None:
    ask = _asking({"ok": True, "status": LIVE})
    reading = StatusSource(Paths(home), ask=ask).read()
    assert reading.live and reading.note is None and reading.document == LIVE
    assert ask.asked == [("status", {})]


def test_no_supervisor_gives_the_offline_document_without_a_note(home: Path) -> None:
    _task(home, "a")
    reading = StatusSource(Paths(home), ask=_asking(NotRunningError("nobody"))).read()
    assert not reading.live and reading.note is None
    assert reading.document["supervisor"] is None
    assert reading.document["offline"] == {"supervisor_running": False, "pid": None, "reason": "nobody"}
    assert [(t["name"], t["state"]) for t in reading.document["tasks"]] == [("a", "stopped")]


def test_a_busy_supervisor_gives_the_offline_document_with_a_note(home: Path) -> None:
    _task(home, "a")
    busy = ControlError("the supervisor did not answer 'status' within 10 s")
    reading = StatusSource(Paths(home), ask=_asking(busy)).read()
    assert not reading.live
    assert reading.note is not None and "did not answer" in reading.note and "offline" in reading.note
    assert [t["name"] for t in reading.document["tasks"]] == ["a"]
    # A supervisor runs: the document says so and never claims the task is stopped.
    assert reading.document["offline"]["supervisor_running"] is True
    assert reading.document["offline"]["reason"] == str(busy)
    (task,) = reading.document["tasks"]
    assert task["state"] == "unknown" and "running but did not answer" in task["why"]


def test_a_supervisor_that_says_it_is_busy_gives_the_offline_document(home: Path) -> None:
    _task(home, "a")
    starting = {"ok": False, "error": "the supervisor's loop did not answer within 10 s", "code": "busy"}
    reading = StatusSource(Paths(home), ask=_asking(starting), running=lambda: True).read()
    assert not reading.live and reading.note is not None and "did not answer" in reading.note
    assert reading.document["offline"]["supervisor_running"] is True
    assert [t["state"] for t in reading.document["tasks"]] == ["unknown"]


def test_a_held_lock_without_a_listening_socket_is_a_running_supervisor(home: Path) -> None:
    _task(home, "a")
    source = StatusSource(Paths(home), ask=_asking(NotRunningError("no supervisor is listening")), running=lambda: True)
    reading = source.read()
    assert reading.document["offline"]["supervisor_running"] is True
    assert "starting or stopping" in reading.document["offline"]["reason"]
    assert [t["state"] for t in reading.document["tasks"]] == ["unknown"]


def test_a_refusal_is_an_error_not_an_offline_answer(home: Path) -> None:
    source = StatusSource(Paths(home), ask=_asking({"ok": False, "error": "no such command"}))
    with pytest.raises(TaskAutomationError, match="no such command"):
        source.read()


def test_a_long_lived_reader_reuses_its_offline_document_until_something_changes(home: Path) -> None:
    paths = Paths(home)
    _task(home, "a")
    paths.ensure()
    records = HistoryStore(paths.database)
    try:
        source = StatusSource(paths, records=records, ask=_asking(NotRunningError("nobody")))
        first = source.read().document
        assert source.read().document is first
        _task(home, "b")
        assert [t["name"] for t in source.read().document["tasks"]] == ["a", "b"]
    finally:
        records.close()


def test_ask_supervisor_without_a_lock_holder_is_not_running(home: Path) -> None:
    with pytest.raises(NotRunningError, match="no supervisor is running"):
        ask_supervisor(Paths(home), "status")
