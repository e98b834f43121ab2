"""The pure [Retry] policy: which outcomes are retried, the backoff delays, and "the next slot wins"."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from supervisor.model import Outcome, RetryPolicy
from supervisor.scheduling.retry import decide_retry, retry_delay, slot_wins

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
POLICY = RetryPolicy(attempts=3, delay_s=30, backoff=2.0, max_delay_s=100)


def test_delays_grow_by_the_backoff_and_stop_at_the_maximum():
    assert [retry_delay(POLICY, retry=k).total_seconds() for k in (1, 2, 3, 4)] == [30, 60, 100, 100]
    flat = RetryPolicy(attempts=5, delay_s=10, backoff=1.0, max_delay_s=3600)
    assert [retry_delay(flat, retry=k).total_seconds() for k in (1, 2, 5)] == [10, 10, 10]
    huge = RetryPolicy(attempts=5000, delay_s=1, backoff=10.0, max_delay_s=3600)
    assert retry_delay(huge, retry=4000) == timedelta(hours=1)  # no overflow


def test_each_failed_attempt_is_retried_at_its_delay_until_the_attempts_are_used():
    times = []
    for attempt in (1, 2, 3):
        decision = decide_retry(POLICY, attempt=attempt, outcome=Outcome.FAILED, finished=T0, next_slot=None)
        assert not decision.final and decision.next_attempt == attempt + 1
        times.append(decision.retry_at)
    assert times == [T0 + timedelta(seconds=30), T0 + timedelta(seconds=60), T0 + timedelta(seconds=100)]
    last = decide_retry(POLICY, attempt=4, outcome=Outcome.FAILED, finished=T0, next_slot=None)
    assert last.final and last.retry_at is None and "all 3 retries used" in last.reason


@pytest.mark.parametrize(
    "outcome", [Outcome.OK, Outcome.SKIPPED, Outcome.TESTING, Outcome.KILLED, Outcome.MEMORY, Outcome.ENV_FAILED]
)
def test_outcomes_not_in_on_are_final(outcome):
    assert decide_retry(POLICY, attempt=1, outcome=outcome, finished=T0, next_slot=None).final


def test_on_can_add_memory_and_env_failed():
    policy = RetryPolicy(attempts=1, on=frozenset({Outcome.MEMORY, Outcome.ENV_FAILED}))
    assert not decide_retry(policy, attempt=1, outcome=Outcome.MEMORY, finished=T0, next_slot=None).final
    assert decide_retry(policy, attempt=1, outcome=Outcome.FAILED, finished=T0, next_slot=None).final


def test_no_retries_by_default():
    decision = decide_retry(RetryPolicy(), attempt=1, outcome=Outcome.FAILED, finished=T0, next_slot=None)
    assert decision.final and decision.reason == "no retries configured"


def test_the_next_slot_wins_over_a_retry_at_or_after_it():
    before = decide_retry(POLICY, attempt=1, outcome=Outcome.TIMEOUT, finished=T0, next_slot=T0 + timedelta(seconds=31))
    assert not before.final and before.retry_at == T0 + timedelta(seconds=30)
    tie = decide_retry(POLICY, attempt=1, outcome=Outcome.TIMEOUT, finished=T0, next_slot=T0 + timedelta(seconds=30))
    assert tie.final and "next slot" in tie.reason
    after = decide_retry(POLICY, attempt=2, outcome=Outcome.CRASHED, finished=T0, next_slot=T0 + timedelta(seconds=45))
    assert after.final  # retry 2 would wait 60 s: the slot at 45 s comes first


def test_slot_wins_for_a_pending_retry():
    retry_at = T0 + timedelta(seconds=30)
    assert slot_wins(retry_at=retry_at, next_slot=retry_at)
    assert slot_wins(retry_at=retry_at, next_slot=T0)
    assert not slot_wins(retry_at=retry_at, next_slot=retry_at + timedelta(microseconds=1))
    assert not slot_wins(retry_at=retry_at, next_slot=None)


def test_attempt_numbers_start_at_one():
    with pytest.raises(ValueError):
        decide_retry(POLICY, attempt=0, outcome=Outcome.FAILED, finished=T0, next_slot=None)
