"""The worker's outage tracker: one line when Redis goes, one when it is back, an echo not logged twice."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from supervisor.scaleout.outage import SETTLE_S, Backoff, Outage
from tests.support.rqworkers import LogLines


def _outage(now: list[float], *, quiet: bool = False) -> tuple[Outage, LogLines]:
    handler = LogLines()
    log = logging.getLogger(f"outage-test-{id(handler)}")
    log.addHandler(handler)
    log.propagate = False
    return Outage("redis://h:6379/0", log=log, quiet=quiet, clock=lambda: now[0]), handler


def test_one_line_per_outage_and_one_when_back() -> None:
    now = [100.0]
    outage, handler = _outage(now)
    refused = RedisConnectionError("Connection refused.")
    for _ in range(5):
        assert outage.tolerate(lambda: (_ for _ in ()).throw(refused), doing="heart-beating") is None
        now[0] += 1
    assert outage.is_down and len(handler.lines) == 1
    assert handler.lines[0].startswith(
        "Redis at redis://h:6379/0 unreachable (Connection refused.) while heart-beating"
    )
    assert outage.tolerate(lambda: "pong", doing="heart-beating") == "pong"
    assert handler.lines[1] == "Redis at redis://h:6379/0 reachable again after 5.0 s" and not outage.is_down
    outage.up()
    assert len(handler.lines) == 2


def test_a_failure_just_after_it_is_back_is_the_same_outage_unless_it_lasts() -> None:
    now = [0.0]
    outage, handler = _outage(now)
    outage.down(RedisConnectionError("reset"), doing="x")
    now[0] = 10.0
    outage.up()
    now[0] = 11.0  # a connection of before the restart fails once more: an echo
    outage.down(RedisConnectionError("reset"), doing="x")
    outage.up()
    assert len(handler.lines) == 2
    now[0] = 12.0  # and again, but this time Redis stays away: said once it lasts longer than SETTLE_S
    outage.down(RedisConnectionError("refused"), doing="y")
    assert len(handler.lines) == 2
    now[0] = 12.0 + SETTLE_S + 0.1
    outage.down(RedisConnectionError("refused"), doing="y")
    outage.down(RedisConnectionError("refused"), doing="y")
    assert len(handler.lines) == 3 and "while y" in handler.lines[2]
    outage.up()
    assert len(handler.lines) == 4 and "reachable again" in handler.lines[3]


def test_a_quiet_outage_logs_nothing_and_other_redis_errors_are_raised() -> None:
    now = [0.0]
    outage, handler = _outage(now, quiet=True)
    outage.down(RedisConnectionError("refused"), doing="x")
    outage.up()
    assert handler.lines == []
    with pytest.raises(ResponseError):
        outage.tolerate(lambda: (_ for _ in ()).throw(ResponseError("WRONGTYPE")), doing="x")


def test_retry_backs_off_until_the_call_succeeds_or_it_is_told_to_stop() -> None:
    assert list(zip(range(6), Backoff(first_s=0.5, max_s=3).delays())) == [
        (0, 0.5),
        (1, 1.0),
        (2, 2.0),
        (3, 3),
        (4, 3),
        (5, 3),
    ]
    outage = Outage("r", log=logging.getLogger("outage-retry"), backoff=Backoff(first_s=0.001, max_s=0.001))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RedisConnectionError("refused")
        return "ok"

    assert outage.retry(flaky, doing="x") == "ok" and len(calls) == 3
    never = RedisConnectionError("refused")
    assert outage.retry(lambda: (_ for _ in ()).throw(never), doing="x", keep_going=lambda: False) is None
