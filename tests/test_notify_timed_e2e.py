"""The timed notices in a real supervisor (main.py) with a receiver on 127.0.0.1: a run slower than
SlowAfterSeconds, and a task silent for longer than ExpectOkWithin that recovers. The spans are seconds
(``ExpectOkWithin = 3s``) so the real clock suffices; hours are the unit tests' fake clock's business."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, write_task
from tests.support.receivers import HttpReceiver

pytestmark = pytest.mark.timeout(120)


def test_a_run_past_slow_after_seconds_is_told_once_while_it_runs(home: Path, http: HttpReceiver) -> None:
    flag = home / "release"
    write_task(
        home / "Tasks",
        "Crawl",
        main=f"""
        import pathlib, time
        def main():
            print('crawling', flush=True)
            deadline = time.monotonic() + 60
            while not pathlib.Path({str(flag)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return 'done'
        """,
        config=f"""
        [Frequency]
        EveryXMinutes = 600
        RunOnStartup = True
        [Notify]
        Urls = {http.url("/notify", scheme="json")}
        SlowAfterSeconds = 1
        """,
    )
    with SupervisorProcess(home) as sup:
        [notice] = http.wait(1, path="/notify", timeout=30)
        running = [r for r in sup.history("Crawl") if r["outcome"] is None]
        assert len(running) == 1  # told while the run still goes
        flag.write_text("")
        wait_for(lambda: any(r["outcome"] == "ok" for r in sup.history("Crawl")), timeout=30, what="the run to end")
        assert len(http.received("/notify")) == 1  # once per run; its ok end is no recovery
    body = notice.json()
    assert body["title"].startswith("Crawl is slow: running for ")
    assert f"run: {running[0]['run_id']}" in body["message"]
    assert "slow after: 1 s (SlowAfterSeconds = 1)" in body["message"] and "crawling" in body["message"]


def test_a_task_without_an_ok_run_goes_silent_once_then_recovers(home: Path, http: HttpReceiver) -> None:
    flag = home / "fixed"
    write_task(
        home / "Tasks",
        "Feed",
        main=f"""
        import pathlib
        def main():
            if not pathlib.Path({str(flag)!r}).exists():
                raise RuntimeError('upstream is down')
            return 'fed'
        """,
        config=f"""
        [Frequency]
        EveryXMinutes = 0.01
        [Notify]
        Urls = {http.url("/notify", scheme="json")}
        On = silent, recovery
        ExpectOkWithin = 3s
        """,
    )
    with SupervisorProcess(home) as sup:
        [silent] = http.wait(1, path="/notify", timeout=40)
        assert silent.json()["title"] == "Feed silent: no ok run for 3 s"
        wait_for(
            lambda: len([r for r in sup.history("Feed") if r["outcome"] == "failed"]) >= 8,
            timeout=40,
            what="more failed runs after the silent notice",
        )
        assert len(http.received("/notify")) == 1  # once: no failure notices (not in On), no second silent
        flag.write_text("")
        notices = http.wait(2, path="/notify", timeout=40)
    assert notices[1].json()["title"] == "Feed recovered"
    assert "last ok run ended: none since" in silent.json()["message"]


def test_a_failing_task_is_reminded_every_repeat_period_until_it_recovers(home: Path, http: HttpReceiver) -> None:
    flag = home / "fixed"
    write_task(
        home / "Tasks",
        "Sync",
        main=f"""
        import pathlib
        def main():
            if not pathlib.Path({str(flag)!r}).exists():
                raise RuntimeError('still broken')
            return 'synced'
        """,
        config=f"""
        [Frequency]
        EveryXMinutes = 0.02
        [Notify]
        Urls = {http.url("/notify", scheme="json")}
        RepeatEvery = 2s
        """,
    )
    with SupervisorProcess(home) as sup:
        notices = http.wait(3, path="/notify", timeout=40)
        titles = [n.json()["title"] for n in notices]
        assert titles == ["Sync failed (failed)", "Sync still failing (failed)", "Sync still failing (failed)"]
        assert "still broken" in notices[2].json()["message"]
        flag.write_text("")
        wait_for(
            lambda: any(n.json()["title"] == "Sync recovered" for n in http.received("/notify")),
            timeout=40,
            what="the recovery notice",
        )
    after = [n.json()["title"] for n in http.received("/notify")]
    # One failure notice, then only reminders; nothing after the recovery (the reminders stopped with it).
    assert after[0] == "Sync failed (failed)" and after[-1] == "Sync recovered"
    assert set(after[1:-1]) == {"Sync still failing (failed)"}
