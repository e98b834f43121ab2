"""The loop's side of notifications: a ``RunFinished`` consumer and a ``RunStarted`` listener.

Both run on the loop thread and only translate the loop's facts into the notifier's plain ``RunFact`` and
queue work; every byte goes out on the delivery thread. A task's streak memory is seeded on its first fact
from the history (the streak *before* that run), so a restart in the middle of a notified failure streak
still sends the recovery and does not repeat the failure notice.
"""

from __future__ import annotations

from typing import Callable

from ..execution.secrets import SecretStore
from ..model import RunFinished, RunStarted
from .model import RunFact
from .notifier import Notifier


class RunNotifications:
    def __init__(
        self,
        notifier: Notifier,
        *,
        secrets: SecretStore | None = None,
        streak_before: Callable[[str, str], int] = lambda task, run_id: 0,
    ) -> None:
        self.notifier = notifier
        self.secrets = secrets
        self.streak_before = streak_before  # (task, run id) -> failure streak before that run, from history

    def __call__(self, fact: RunFinished) -> None:
        if fact.spec is None or not fact.spec.notify.any_channel:
            return
        settings = fact.spec.notify
        if not self.notifier.knows(fact.task):
            self.notifier.seed(
                fact.task, consecutive_failures=self.streak_before(fact.task, fact.run_id), settings=settings
            )
        record = fact.record
        run = RunFact(
            task=fact.task,
            run_id=fact.run_id,
            outcome=fact.outcome.value,
            final=fact.final,
            attempt=fact.attempt,
            consecutive_failures=fact.consecutive_failures,
            duration_s=record.duration_s,
            exit_code=record.exit_code,
            signal=record.signal,
            message=record.message,
            log_path=record.log_path,
            due=record.due,
            finished=record.finished,
            reason=record.reason.value if record.reason is not None else None,
            slots=record.slots,
        )
        secrets = self.secrets.get(fact.task)[0] if self.secrets is not None else None
        self.notifier.run_finished(run, settings=settings, secrets=secrets)

    def run_started(self, fact: RunStarted) -> None:
        self.notifier.run_started(fact.task, fact.run_id, settings=fact.spec.notify)
