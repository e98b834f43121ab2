"""The [Retry] policy, pure: after an attempt of a run ended, is it retried, and when?

Policy (docs/cli.md, "Retries"):

- Attempts are numbered 1, 2, ...; attempt 1 is the scheduled (or startup, or manual) run itself.
  ``RetryPolicy.attempts`` is the number of retries, so a run has at most ``attempts + 1`` attempts.
- Only outcomes listed in ``[Retry] On`` are retried (default: failed, timeout, crashed). ``ok``,
  ``skipped``, ``testing`` and ``killed`` (a stop on purpose) never are.
- The delay before retry k (k = 1 for attempt 2) is ``min(DelaySeconds * Backoff ** (k - 1),
  MaxDelaySeconds)``, counted from the end of the failed attempt.
- The next slot wins: a retry due at or after the task's next scheduled slot is dropped, and the attempt
  that failed is final. Retries never move the schedule and never overlap a slot.
- An attempt is *final* when no retry follows it; only final attempts count in the task's streak of
  consecutive failures and only they notify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..model import Outcome, RetryPolicy, Upstream

# Far beyond any sensible MaxDelaySeconds, and small enough that "finished + delay" cannot overflow.
_LONGEST_DELAY_S = 366 * 86400.0


@dataclass(frozen=True)
class PendingRetry:
    """A retry the loop will start at ``at`` unless the task's next slot comes first."""

    at: datetime
    attempt: int  # the attempt number it will have (2, 3, ...)
    retry_of: str  # run id of the run's first attempt
    upstream: Upstream | None = None  # a run of [Frequency] After: its retries keep its upstream


@dataclass(frozen=True)
class RetryDecision:
    """What follows an attempt: a retry at ``retry_at`` (then ``final`` is False), or nothing."""

    final: bool
    retry_at: datetime | None = None
    next_attempt: int | None = None  # the attempt number of the retry
    reason: str = ""  # why it is final, or when the retry runs: for logs and ``why``


def retry_delay(policy: RetryPolicy, *, retry: int) -> timedelta:
    """The delay before retry number ``retry`` (1 = the first retry, i.e. attempt 2)."""
    if retry < 1:
        raise ValueError(f"retry numbers start at 1, got {retry}")
    try:
        seconds = policy.delay_s * policy.backoff ** (retry - 1)
    except OverflowError:
        seconds = math.inf
    seconds = min(seconds, policy.max_delay_s, _LONGEST_DELAY_S)
    return timedelta(seconds=seconds)


def decide_retry(
    policy: RetryPolicy, *, attempt: int, outcome: Outcome, finished: datetime, next_slot: datetime | None
) -> RetryDecision:
    """Retry or final, for attempt number ``attempt`` that ended with ``outcome`` at ``finished``.

    ``next_slot`` is the task's next scheduled due time (None when it has none, e.g. after its last RunAt).
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if outcome not in policy.on:
        return RetryDecision(final=True, reason=f"{outcome.value} is not retried")
    if attempt > policy.attempts:
        if policy.attempts == 0:
            return RetryDecision(final=True, reason="no retries configured")
        return RetryDecision(final=True, reason=f"all {policy.attempts} retries used")
    retry_at = finished + retry_delay(policy, retry=attempt)
    if next_slot is not None and retry_at >= next_slot:
        return RetryDecision(
            final=True,
            reason=f"retry at {retry_at.isoformat()} dropped: the next slot {next_slot.isoformat()} comes first",
        )
    return RetryDecision(
        final=False,
        retry_at=retry_at,
        next_attempt=attempt + 1,
        reason=f"attempt {attempt + 1} of {policy.attempts + 1} at {retry_at.isoformat()}",
    )


def slot_wins(*, retry_at: datetime, next_slot: datetime | None) -> bool:
    """True when a pending retry must be dropped because the schedule's next slot is not later than it."""
    return next_slot is not None and next_slot <= retry_at
