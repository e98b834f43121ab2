"""The new notice events (issue 22, item 2): missed, silent, slow and RepeatEvery. Keys and their errors, the
pure rules of watch.py with a fake clock (hours pass in no time), and the notifier with its timer driven by
``tick()`` (no thread), collecting what it would queue for delivery."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from supervisor.config.schema import parse_home_config, parse_task_config
from supervisor.config.values import InvalidValue, duration
from supervisor.errors import ConfigError
from supervisor.model import MissedReason, NotifyEvent, NotifySettings, Outcome, RunFinished, RunRecord, Trigger
from supervisor.notify import watch as rules
from supervisor.notify.consumer import RunNotifications
from supervisor.notify.message import Origin
from supervisor.notify.model import ChannelJob, Job, RunFact, StreakState
from supervisor.notify.notifier import Notifier
from supervisor.notify.policy import decide_notices
from supervisor.notify.watch import TaskWatch, WatchSeed

pytestmark = pytest.mark.timeout(30)
CONFIG = Path("/h/Tasks/T/config.ini")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
URL = "json://127.0.0.1:9/n"


def task_config(notify: str, *, defaults: NotifySettings = NotifySettings()) -> NotifySettings:
    text = f"[Frequency]\nEveryXMinutes = 5\n[Notify]\nUrls = {URL}\n{notify}\n"
    return parse_task_config(text, task="T", path=CONFIG, notify_defaults=defaults).spec.notify


# ---------------------------------------------------------------------------------------------- keys
def test_timed_keys_parse_with_units_and_default_to_off() -> None:
    plain = task_config("")
    assert (plain.expect_ok_within, plain.slow_after_s, plain.slow_factor, plain.repeat_every) == (None,) * 4
    s = task_config("expectokwithin = 26h\nSlowAfterSeconds = 90\nSLOWFACTOR = 2.5\nRepeatEvery = 1h30m")
    assert s.expect_ok_within == timedelta(hours=26) and s.repeat_every == timedelta(minutes=90)
    assert s.slow_after_s == 90 and s.slow_factor == 2.5
    assert NotifyEvent.SILENT in s.on and NotifyEvent.SLOW in s.on and NotifyEvent.MISSED not in s.on
    assert task_config("On = missed, silent, slow").on == {NotifyEvent.MISSED, NotifyEvent.SILENT, NotifyEvent.SLOW}


def test_home_defaults_apply_and_a_task_turns_them_off() -> None:
    home, _ = parse_home_config(
        "[Notify]\nExpectOkWithin = 2d\nRepeatEvery = 6h\nSlowFactor = 3\n", path=Path("/h/taskautomation.ini")
    )
    inherited = task_config("", defaults=home.notify)
    assert inherited.expect_ok_within == timedelta(days=2) and inherited.slow_factor == 3
    off = task_config("ExpectOkWithin = off\nRepeatEvery =\nSlowFactor = 0", defaults=home.notify)
    assert (off.expect_ok_within, off.repeat_every, off.slow_factor) == (None, None, None)


@pytest.mark.parametrize(
    "line, key, shown, reason",
    [
        ("ExpectOkWithin = 26", "ExpectOkWithin", "26", "add a unit"),
        ("ExpectOkWithin = soon", "ExpectOkWithin", "soon", "not a duration"),
        ("RepeatEvery = 5 parsecs", "RepeatEvery", "5 parsecs", "not a duration"),
        ("SlowAfterSeconds = -3", "SlowAfterSeconds", "-3", "above 0"),
        ("SlowAfterSeconds = slowly", "SlowAfterSeconds", "slowly", "not a number"),
        ("SlowFactor = 0.5", "SlowFactor", "0.5", "more than 1"),
        ("SlowFactor = inf", "SlowFactor", "inf", "more than 1"),
    ],
)
def test_bad_timed_values_name_task_file_section_key_value(line: str, key: str, shown: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        task_config(line)
    message = str(err.value)
    assert message.startswith(f"task 'T': {CONFIG}: [Notify] {key} = '{shown}'") and reason in message


def test_a_bad_home_default_names_the_home_file() -> None:
    with pytest.raises(ConfigError, match=r"taskautomation.ini: \[Notify\] RepeatEvery = '3x'"):
        parse_home_config("[Notify]\nRepeatEvery = 3x\n", path=Path("/h/taskautomation.ini"))


def test_durations() -> None:
    assert duration("90m") == timedelta(minutes=90) and duration("1h 30m") == timedelta(minutes=90)
    assert duration("2D") == timedelta(days=2) and duration("1.5h") == timedelta(minutes=90)
    assert duration("45s") == timedelta(seconds=45) and duration("1w") == timedelta(days=7)
    for bad in ("", "h", "0m", "10", "5 minutes", "-2h", "1000000d"):
        with pytest.raises(InvalidValue):
            duration(bad)


# ---------------------------------------------------------------------------------------------- missed
def missed(run: str = "m1", slots: int = 3) -> RunFact:
    return RunFact(
        task="T",
        run_id=run,
        outcome="missed",
        due=T0,
        finished=T0 + timedelta(hours=2),
        reason="down",
        slots=slots,
    )


def test_a_missed_row_notifies_once_and_neither_starts_nor_ends_a_streak() -> None:
    on = NotifySettings(on=frozenset({NotifyEvent.MISSED, NotifyEvent.FAILURE, NotifyEvent.RECOVERY}))
    verdict = decide_notices(missed(), settings=on, state=StreakState())
    assert verdict.events == (NotifyEvent.MISSED,) and verdict.ping_suffix is None and not verdict.state.alarmed
    again = decide_notices(missed(slots=5), settings=on, state=verdict.state)  # the same row, grown
    assert again.events == ()
    assert decide_notices(missed("m2"), settings=on, state=again.state).events == (NotifyEvent.MISSED,)
    alarmed = StreakState(alarmed=True)
    assert decide_notices(missed(), settings=on, state=alarmed).state.alarmed  # a failure streak goes on
    assert decide_notices(missed(), settings=NotifySettings(), state=StreakState()).events == ()  # opt-in


def collecting(notifier: Notifier) -> list[Job]:
    posted: list[Job] = []
    notifier.delivery.post = posted.append  # type: ignore[method-assign]
    return posted


def notifier() -> Notifier:
    import logging

    return Notifier(origin=Origin("box", Path("/h")), logger=logging.getLogger("t"), read_lines=lambda path, run: [])


def test_a_published_missed_fact_becomes_a_notice_with_reason_slots_and_span() -> None:
    spec = parse_task_config(
        f"[Frequency]\nEveryXMinutes = 60\n[Notify]\nUrls = {URL}\nOn = missed, failure\n", task="T", path=CONFIG
    ).spec
    record = RunRecord(
        run_id="20260301T080000-abc",
        task="T",
        trigger=Trigger.SCHEDULE,
        started=T0 + timedelta(hours=2),
        due=T0,
        finished=T0 + timedelta(hours=2),
        outcome=Outcome.MISSED,
        duration_s=0.0,
        reason=MissedReason.DOWN,
        slots=3,
    )
    fact = RunFinished(
        task="T", run_id=record.run_id, trigger=Trigger.SCHEDULE, outcome=Outcome.MISSED, record=record,
        consecutive_failures=2, spec=spec,
    )  # fmt: skip
    n = notifier()
    posted = collecting(n)
    consumer = RunNotifications(n, streak_before=lambda task, run_id: 2)
    consumer(fact)
    consumer(fact)  # published again (the row grew): no second notice
    [job] = posted
    assert isinstance(job, ChannelJob) and job.notice.event is NotifyEvent.MISSED
    assert job.notice.title == "T missed 3 runs (down)"
    body = job.notice.body
    assert "reason: down (the supervisor was not running)" in body and "missed slots: 3" in body
    assert "first slot (due): 2026-03-01T08:00:00+00:00" in body and "(span 2 h)" in body
    assert n._states["T"].alarmed  # the streak of 2 (AfterFailures 1) was notified before: still standing


# ---------------------------------------------------------------------------------------------- silent
SILENT = NotifySettings(urls=(URL,), expect_ok_within=timedelta(hours=26))


def ok(run: str, at: datetime, duration_s: float = 10.0) -> RunFact:
    return RunFact(task="T", run_id=run, outcome="ok", duration_s=duration_s, finished=at)


def failed(run: str, streak: int = 1) -> RunFact:
    return RunFact(task="T", run_id=run, outcome="failed", consecutive_failures=streak)


def events(notices: list[rules.TimedNotice]) -> list[tuple[str, bool]]:
    return [(n.event.value, n.repeat) for n in notices]


def test_silent_once_after_the_span_without_an_ok_run_then_recovery() -> None:
    w = rules.seeded(TaskWatch(SILENT, since=T0), WatchSeed(last_ok=T0), T0)
    assert rules.next_at(w) == T0 + timedelta(hours=26)
    w, notices = rules.due("T", w, T0 + timedelta(hours=25, minutes=59))
    assert notices == []
    w, notices = rules.due("T", w, T0 + timedelta(hours=26))
    assert events(notices) == [("silent", False)] and notices[0].watch.last_ok == T0
    w, notices = rules.due("T", w, T0 + timedelta(hours=80))
    assert notices == [] and rules.next_at(w) is None  # once: nothing more to wait for
    w, recovered = rules.finished(
        w, ok("r", T0 + timedelta(hours=81)), T0 + timedelta(hours=81), failure_standing=False
    )
    assert recovered and not w.silent and rules.next_at(w) == T0 + timedelta(hours=107)


def test_a_task_that_never_ran_ok_counts_from_when_it_is_watched_and_unseeded_waits() -> None:
    w = TaskWatch(SILENT, since=T0)
    assert rules.due("T", w, T0 + timedelta(days=9))[1] == []  # the history is not read yet: no guess
    w = rules.seeded(w, WatchSeed(), T0)
    assert rules.next_at(w) == T0 + timedelta(hours=26)
    assert events(rules.due("T", w, T0 + timedelta(hours=26))[1]) == [("silent", False)]


def test_a_restart_neither_repeats_nor_loses_a_silent_notice() -> None:
    now = T0 + timedelta(hours=40)  # last ok at T0, silent since T0 + 26 h
    # The task kept running (failing) after the deadline: the previous supervisor saw it and sent the notice.
    kept = rules.seeded(
        TaskWatch(SILENT, since=now), WatchSeed(last_ok=T0, newest_started=now - timedelta(hours=1)), now
    )
    assert kept.silent and rules.due("T", kept, now)[1] == []
    # Nothing ran after the deadline (the supervisor was down then): the notice goes out now, late.
    down = rules.seeded(TaskWatch(SILENT, since=now), WatchSeed(last_ok=T0, newest_started=T0), now)
    assert events(rules.due("T", down, now)[1]) == [("silent", False)]


def test_silent_is_not_watched_without_it_in_on() -> None:
    w = TaskWatch(
        NotifySettings(urls=(URL,), expect_ok_within=timedelta(hours=1), on=frozenset({NotifyEvent.FAILURE})),
        since=T0,
        seeded=True,
    )
    assert rules.next_at(w) is None and rules.due("T", w, T0 + timedelta(days=3))[1] == []


# ---------------------------------------------------------------------------------------------- repeat
REPEAT = NotifySettings(urls=(URL,), expect_ok_within=timedelta(hours=26), repeat_every=timedelta(hours=6))


def test_a_silent_task_is_told_again_every_period_and_missed_periods_are_not_a_burst() -> None:
    w = rules.seeded(TaskWatch(REPEAT, since=T0), WatchSeed(last_ok=T0), T0)
    w, notices = rules.due("T", w, T0 + timedelta(hours=26))
    assert events(notices) == [("silent", False)] and w.repeat_at == T0 + timedelta(hours=32)
    w, notices = rules.due("T", w, T0 + timedelta(hours=32))
    assert events(notices) == [("silent", True)]
    w, notices = rules.due("T", w, T0 + timedelta(hours=57))  # asleep for 4 periods: one repeat
    assert events(notices) == [("silent", True)] and w.repeat_at == T0 + timedelta(hours=62)
    w, _ = rules.finished(w, ok("r", T0 + timedelta(hours=58)), T0 + timedelta(hours=58), failure_standing=False)
    assert w.repeat_at is None


def test_a_failing_task_repeats_its_failure_notice_until_an_ok_run() -> None:
    w = TaskWatch(NotifySettings(urls=(URL,), repeat_every=timedelta(minutes=90)), since=T0, seeded=True)
    w, _ = rules.finished(w, failed("f1"), T0, failure_standing=True)
    assert w.repeat_at == T0 + timedelta(minutes=90)
    w, _ = rules.finished(w, failed("f2", 2), T0 + timedelta(minutes=30), failure_standing=True)
    assert w.repeat_at == T0 + timedelta(minutes=90) and w.failing is not None and w.failing.run_id == "f2"
    w, notices = rules.due("T", w, T0 + timedelta(minutes=90))
    assert events(notices) == [("failure", True)] and notices[0].watch.failing.run_id == "f2"  # type: ignore[union-attr]
    assert rules.due("T", w, T0 + timedelta(minutes=179))[1] == []
    w, _ = rules.finished(w, ok("r", T0 + timedelta(hours=3)), T0 + timedelta(hours=3), failure_standing=False)
    assert w.repeat_at is None and w.failing is None
    assert rules.due("T", w, T0 + timedelta(days=2))[1] == []


def test_without_repeat_every_a_failure_is_told_once() -> None:
    w = TaskWatch(NotifySettings(urls=(URL,)), since=T0, seeded=True)
    w, _ = rules.finished(w, failed("f1"), T0, failure_standing=True)
    assert w.repeat_at is None and rules.due("T", w, T0 + timedelta(days=30))[1] == []


# ---------------------------------------------------------------------------------------------- slow
def test_slow_after_seconds_once_per_run_while_it_runs() -> None:
    w = TaskWatch(NotifySettings(urls=(URL,), slow_after_s=600), since=T0, seeded=True)
    w = rules.started(w, "r1", T0)
    assert rules.next_at(w) == T0 + timedelta(minutes=10)
    assert rules.due("T", w, T0 + timedelta(minutes=9))[1] == []
    w, notices = rules.due("T", w, T0 + timedelta(minutes=10))
    assert events(notices) == [("slow", False)] and notices[0].run.run_id == "r1"  # type: ignore[union-attr]
    assert notices[0].threshold_s == 600
    assert rules.due("T", w, T0 + timedelta(hours=5))[1] == []  # once per run
    w, _ = rules.finished(w, ok("r1", T0 + timedelta(hours=5)), T0 + timedelta(hours=5), failure_standing=False)
    w = rules.started(w, "r2", T0 + timedelta(hours=6))
    assert events(rules.due("T", w, T0 + timedelta(hours=6, minutes=10))[1]) == [("slow", False)]  # the next run


def test_slow_factor_uses_the_median_of_the_last_ok_runs() -> None:
    settings = NotifySettings(urls=(URL,), slow_factor=3)
    w = rules.seeded(TaskWatch(settings, since=T0), WatchSeed(ok_durations=(100.0, 10.0)), T0)
    assert rules.slow_threshold(settings, w.ok_durations) is None  # two runs do not make a "usual"
    w, _ = rules.finished(rules.started(w, "a", T0), ok("a", T0, duration_s=20.0), T0, failure_standing=False)
    assert rules.slow_threshold(settings, w.ok_durations) == 60.0  # 3 x median(100, 10, 20)
    w = rules.started(w, "b", T0)
    assert rules.due("T", w, T0 + timedelta(seconds=59))[1] == []
    assert events(rules.due("T", w, T0 + timedelta(seconds=60))[1]) == [("slow", False)]
    many = tuple(float(i) for i in range(100))  # only the newest 20 count: median of 80..99 = 89.5
    assert (
        rules.slow_threshold(
            settings, rules.seeded(TaskWatch(settings, since=T0), WatchSeed(ok_durations=many), T0).ok_durations
        )
        == 268.5
    )
    both = NotifySettings(slow_after_s=30, slow_factor=3)
    assert rules.slow_threshold(both, (100.0, 100.0, 100.0)) == 30  # the earlier of the two
    assert rules.slow_threshold(NotifySettings(slow_factor=3), (0.01, 0.01, 0.01)) == rules.MIN_SLOW_S
    assert rules.slow_threshold(NotifySettings(slow_after_s=5, on=frozenset()), ()) is None


# ---------------------------------------------------------------------------------------------- the notifier
class FakeClock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def test_the_notifier_sends_timed_notices_from_its_timer_and_recovery_once() -> None:
    n, clock = notifier(), FakeClock()
    posted = collecting(n)
    settings = NotifySettings(
        urls=(URL,), expect_ok_within=timedelta(hours=2), slow_after_s=60, repeat_every=timedelta(hours=1)
    )
    seeds: list[str] = []
    timer = n.watch(
        now=clock, tasks=lambda: {"T": settings}, seed=lambda t: seeds.append(t) or WatchSeed(last_ok=T0), start=False
    )
    assert timer.tick() == T0 + timedelta(hours=2) and seeds == ["T"]
    n.run_started("T", "r1", settings=settings)
    clock.at = T0 + timedelta(minutes=1)
    timer.tick()
    [slow] = posted
    assert isinstance(slow, ChannelJob) and slow.notice.title == "T is slow: running for 60 s"
    assert "slow after: 60 s (SlowAfterSeconds = 60)" in slow.notice.body and "run: r1" in slow.notice.body
    n.run_finished(failed("r1"), settings=settings)  # the failure notice: by the loop, on the fact
    clock.at = T0 + timedelta(hours=2)
    timer.tick()  # silent (no ok run for 2 h); the failure repeat is due at 1:01 + 1 h
    assert [j.notice.title for j in posted if isinstance(j, ChannelJob)] == [
        "T is slow: running for 60 s",
        "T failed (failed)",
        "T silent: no ok run for 2 h",
        "T still failing (failed)",  # repeat due at 0:01 + 1 h, sent late (the fake clock jumped) but once
    ]
    del posted[:]
    clock.at = T0 + timedelta(hours=2, minutes=5)
    n.run_finished(ok("r2", clock.at), settings=settings)
    assert [j.notice.title for j in posted if isinstance(j, ChannelJob)] == ["T recovered"]  # streak and silence: one
    assert seeds == ["T"]  # seeded once, never per run


def test_a_missed_row_during_a_notified_streak_is_not_repeated_as_a_failure() -> None:
    w = TaskWatch(NotifySettings(urls=(URL,), repeat_every=timedelta(hours=1)), since=T0, seeded=True)
    w, _ = rules.finished(w, failed("f1"), T0, failure_standing=True)
    w, _ = rules.finished(w, missed(), T0 + timedelta(minutes=10), failure_standing=True)
    assert w.failing is not None and w.failing.run_id == "f1"  # the repeat still tells the failed run
    assert w.repeat_at == T0 + timedelta(hours=1)


def test_tasks_without_a_timed_key_cost_the_timer_nothing() -> None:
    n, clock = notifier(), FakeClock()
    posted = collecting(n)
    seeds: list[str] = []
    timer = n.watch(now=clock, tasks=dict, seed=lambda t: seeds.append(t) or WatchSeed(), start=False)
    plain = NotifySettings(urls=(URL,))
    n.run_started("T", "r1", settings=plain)
    n.run_finished(failed("r1"), settings=plain)
    clock.at = T0 + timedelta(days=3)
    assert timer.tick() is None and seeds == [] and timer.watch_of("T") is None
    assert [j.notice.title for j in posted if isinstance(j, ChannelJob)] == ["T failed (failed)"]


def test_the_timer_forgets_a_task_that_is_no_longer_scheduled_once_its_run_ends() -> None:
    n, clock = notifier(), FakeClock()
    settings = NotifySettings(urls=(URL,), expect_ok_within=timedelta(hours=1), slow_after_s=30)
    wanted: dict[str, NotifySettings] = {"T": settings}
    timer = n.watch(now=clock, tasks=lambda: wanted, seed=lambda t: WatchSeed(), start=False)
    timer.tick()
    n.run_started("T", "r1", settings=settings)
    wanted = {}  # paused or unloaded while its run goes on
    timer.tick()
    assert timer.watch_of("T") is not None  # still watched for slow while the run is in flight
    n.run_finished(ok("r1", clock.at), settings=settings)
    clock.at = T0 + timedelta(hours=5)
    assert timer.tick() is None and timer.watch_of("T") is None  # and never told silent


def test_seeds_come_from_the_history_and_a_missed_row_is_no_sign_of_life(tmp_path: Path) -> None:
    import logging

    from supervisor.history.store import HistoryStore
    from supervisor.notify.timers import history_seeds

    def row(run: str, outcome: Outcome, started: datetime, duration_s: float, **extra: object) -> RunRecord:
        return RunRecord(
            run_id=run, task="T", trigger=Trigger.SCHEDULE, started=started, due=started, outcome=outcome,
            finished=started + timedelta(seconds=duration_s), duration_s=duration_s, **extra,  # type: ignore[arg-type]
        )  # fmt: skip

    with HistoryStore(tmp_path / "h.sqlite3") as store:
        for i, seconds in enumerate((30.0, 10.0, 20.0)):
            store.record_instant(row(f"ok{i}", Outcome.OK, T0 + timedelta(hours=i), seconds))
        store.record_instant(row("f", Outcome.FAILED, T0 + timedelta(hours=5), 1.0))
        store.record_instant(row("m", Outcome.MISSED, T0 + timedelta(hours=40), 0.0, reason=MissedReason.DOWN, slots=9))
    opened: list[HistoryStore] = []

    def open_records() -> HistoryStore:
        opened.append(HistoryStore(tmp_path / "h.sqlite3", readonly=True))
        return opened[-1]

    seed = history_seeds(open_records, logger=logging.getLogger("t"))
    got = seed("T")
    assert got == WatchSeed(
        last_ok=T0 + timedelta(hours=2, seconds=20),
        ok_durations=(30.0, 10.0, 20.0),
        newest_started=T0 + timedelta(hours=5),
    )
    assert seed("Other") == WatchSeed() and len(opened) == 1  # one connection for every task
    now = T0 + timedelta(hours=41)  # silent since 2:00:20 + 26 h; the previous supervisor's last row is 5:00
    w = rules.seeded(TaskWatch(SILENT, since=now), got, now)
    assert events(rules.due("T", w, now)[1]) == [("silent", False)]  # it was down at the deadline: sent now
    opened[0].close()


def test_a_reminder_overtaken_by_the_ok_run_is_dropped_not_sent_after_the_recovery() -> None:
    n, clock = notifier(), FakeClock()
    posted = collecting(n)
    settings = NotifySettings(urls=(URL,), repeat_every=timedelta(hours=1))
    timer = n.watch(now=clock, tasks=lambda: {"T": settings}, seed=lambda t: WatchSeed(), start=False)
    timer.tick()
    n.run_finished(failed("f1"), settings=settings)
    clock.at = T0 + timedelta(hours=1)
    prepare = n.prepare_timed

    def ok_run_meanwhile(notice: rules.TimedNotice) -> object:
        queue = prepare(notice)  # rendered; before it is queued the loop records the ok run
        n.run_finished(ok("r2", clock.at), settings=settings)
        return queue

    timer._prepare = ok_run_meanwhile  # type: ignore[assignment]
    timer.tick()
    assert [j.notice.title for j in posted if isinstance(j, ChannelJob)] == ["T failed (failed)", "T recovered"]
