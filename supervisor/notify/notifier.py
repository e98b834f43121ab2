"""The run-finished consumer: turns run facts into jobs for the delivery worker, and ``notify-test``.

The loop thread calls ``run_started`` and ``run_finished``; both only compute (pure policy, text from the end
of the task's log) and post jobs, so a dead receiver never delays a run, a stop or a reload. The one piece of
state is the policy's memory per task (is the current failure streak already notified?), seeded from the
history at start so a restart in the middle of a streak neither repeats the failure notice nor loses the
recovery. The timed notices (silent, slow, repeats) have their own timer thread (``timers.py``), started by
``watch``; the loop thread only tells it about runs.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..config.notify_keys import mask_url
from ..execution.secrets import NO_MASKER, Masker, Secrets
from ..model import NotifyEvent, NotifySettings
from .delivery import DEFAULT_CAPACITY, DEFAULT_PAUSES_S, DEFAULT_TRIES, Delivery
from .message import Origin, ping_body, read_run_lines, render, render_timed
from .model import ChannelJob, CommandJob, DeliveryResult, Job, Notice, PingJob, RunFact, StreakState
from .policy import decide_notices, ping_url
from .senders import ping, run_command, send_apprise
from .timers import TimedNotices
from .watch import TimedNotice, WatchSeed, watched


def default_origin(home: Path) -> Origin:
    return Origin(host=socket.gethostname(), home=home)


class Notifier:
    def __init__(
        self,
        *,
        origin: Origin,
        logger: logging.Logger,
        env: Mapping[str, str] | None = None,
        read_lines: Callable[[Path | None, str], list[str]] = read_run_lines,
        capacity: int = DEFAULT_CAPACITY,
        tries: int = DEFAULT_TRIES,
        pauses_s: Sequence[float] = DEFAULT_PAUSES_S,
        task_log: Callable[[str], Path | None] = lambda task: None,
    ) -> None:
        self.origin = origin
        self._task_log = task_log  # where a running task's lines are (the tail of a slow notice)
        self._now: Callable[[], datetime] = lambda: datetime.now().astimezone()
        self._log = logger
        self._env = dict(os.environ if env is None else env)
        self._read_lines = read_lines
        self._states: dict[str, StreakState] = {}
        self._secrets: dict[str, tuple[Secrets, Masker]] = {}
        self.delivery = Delivery(
            self.send, describe=describe, logger=logger, capacity=capacity, tries=tries, pauses_s=pauses_s
        )
        self.timed: TimedNotices | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.delivery.start()

    def watch(
        self,
        *,
        now: Callable[[], datetime],
        tasks: Callable[[], Mapping[str, NotifySettings]],
        seed: Callable[[str], WatchSeed],
        start: bool = True,
    ) -> TimedNotices:
        """Turn on the timed notices: ``tasks`` names the loaded tasks with a timed key, ``seed`` reads a
        task's past from the history (both called on the timer thread)."""
        self._now = now
        self.timed = TimedNotices(prepare=self.prepare_timed, now=now, logger=self._log, tasks=tasks, seed=seed)
        if start:
            self.timed.start()
        return self.timed

    def close(self, *, drain_s: float = 5.0) -> None:
        if self.timed is not None:
            self.timed.stop()
        self.delivery.close(drain_s=drain_s)

    def knows(self, task: str) -> bool:
        """True once the task's streak memory exists (seeded or from an earlier fact)."""
        return task in self._states

    def seed(self, task: str, *, consecutive_failures: int, settings: NotifySettings) -> None:
        """The streak a task already had when the supervisor started (from its history)."""
        self._states[task] = StreakState.from_streak(consecutive_failures, after_failures=settings.after_failures)

    # ------------------------------------------------------------------ called on the loop thread
    def run_started(self, task: str, run_id: str, *, settings: NotifySettings) -> None:
        url = ping_url(settings, "/start")
        if url is not None:
            self.delivery.post(PingJob(url, what=" /start", task=task))
        if self.timed is not None and watched(settings):
            self.timed.started(task, run_id, settings)

    def _masker(self, task: str, secrets: Secrets | None) -> Masker:
        """The task's masker, compiled once per set of secrets (the loop hands the same object until a reload)."""
        if secrets is None:
            return NO_MASKER
        known = self._secrets.get(task)
        if known is None or known[0] is not secrets:
            known = (secrets, secrets.masker())
            self._secrets[task] = known
        return known[1]

    def run_finished(self, fact: RunFact, *, settings: NotifySettings, secrets: Secrets | None = None) -> None:
        """Decide and queue what ``fact`` causes; returns at once. ``secrets`` are the task's .env values:
        masked in everything sent, and in the Command hook's environment."""
        masker = self._masker(fact.task, secrets)
        state = self._states.get(fact.task)
        if state is None:  # no seed: the streak before this run is the fact's streak minus this run
            state = StreakState.from_streak(
                max(0, fact.consecutive_failures - 1), after_failures=settings.after_failures
            )
        verdict = decide_notices(fact, settings=settings, state=state)
        self._states[fact.task] = verdict.state
        events = verdict.events
        if self.timed is not None and watched(settings):
            standing = verdict.state.alarmed and NotifyEvent.FAILURE in settings.on
            ends_silence = self.timed.finished(fact, settings, failure_standing=standing)
            if ends_silence and NotifyEvent.RECOVERY in settings.on and NotifyEvent.RECOVERY not in events:
                events = (*events, NotifyEvent.RECOVERY)
        url = ping_url(settings, verdict.ping_suffix) if verdict.ping_suffix is not None else None
        if not events and url is None:
            return
        lines = self._read_lines(fact.log_path, fact.run_id)
        if url is not None:
            self.delivery.post(
                PingJob(url, body=ping_body(lines, mask=masker.mask), what=verdict.ping_suffix or "", task=fact.task)
            )
        for event in events:
            notice = render(fact, event, origin=self.origin, log_lines=lines, mask=masker.mask)
            for job in jobs_for(notice, settings):
                self.delivery.post(job)

    def prepare_timed(self, notice: TimedNotice) -> Callable[[], None]:
        """Render a timed notice (on the timer thread: the run's log is read there); returns what queues it."""
        _, masker = self._secrets.get(notice.task, (None, NO_MASKER))
        failing = notice.watch.failing
        if notice.event is NotifyEvent.FAILURE and failing is not None:  # a repeat of the failure notice
            lines = self._read_lines(failing.log_path, failing.run_id)
            rendered = render(failing, NotifyEvent.FAILURE, origin=self.origin, log_lines=lines, mask=masker.mask)
            rendered = replace(rendered, title=f"{failing.task} still failing ({failing.outcome})")
        else:
            lines = self._read_lines(self._task_log(notice.task), notice.run.run_id) if notice.run else []
            rendered = render_timed(notice, now=self._now(), origin=self.origin, log_lines=lines, mask=masker.mask)
        jobs = jobs_for(rendered, notice.watch.settings)

        def queue() -> None:
            for job in jobs:
                self.delivery.post(job)

        return queue

    def forget(self, task: str) -> None:
        """The task was removed: drop its memory."""
        self._states.pop(task, None)
        self._secrets.pop(task, None)

    # ------------------------------------------------------------------ on the delivery thread
    def send(self, job: Job) -> DeliveryResult:
        """One try of ``job`` (the delivery worker's ``send``)."""
        if isinstance(job, PingJob):
            return ping(job.url, job.body)
        secrets, masker = self._secrets.get(job.notice.task, (Secrets(), NO_MASKER))
        if isinstance(job, ChannelJob):
            return send_apprise(job.url, job.notice, mask=masker.mask)
        return run_command(job.argv, job.notice, env={**self._env, **secrets.values}, mask=masker.mask)

    # ------------------------------------------------------------------ notify-test
    def test(self, task: str, *, settings: NotifySettings, secrets: Secrets | None = None) -> list[ChannelCheck]:
        """Send a test notice through every channel of ``task`` now, on this thread, one try each."""
        masker = self._masker(task, secrets)
        fact = RunFact(
            task=task,
            run_id="notify-test",
            outcome="test",
            message="This is a test notice from "
            f"the supervisor on {self.origin.host}: if you read this, the channel works.",
        )
        notice = render(fact, NotifyEvent.TEST, origin=self.origin, log_lines=[], mask=masker.mask)
        checks = [ChannelCheck(describe_channel(job), self.send(job)) for job in jobs_for(notice, settings)]
        if settings.ping_url is not None:
            # healthchecks' /log endpoint records an event without changing the check's state.
            job = PingJob(settings.ping_url + "/log", body=notice.body.encode("utf-8"), what=" /log", task=task)
            checks.append(ChannelCheck(describe_channel(job), self.send(job)))
        return checks


@dataclass(frozen=True)
class ChannelCheck:
    channel: str  # masked, for printing
    result: DeliveryResult


def jobs_for(notice: Notice, settings: NotifySettings) -> list[Job]:
    jobs: list[Job] = [ChannelJob(url, notice) for url in settings.urls]
    if settings.command:
        jobs.append(CommandJob(settings.command, notice))
    return jobs


def describe_channel(job: Job) -> str:
    if isinstance(job, ChannelJob):
        return mask_url(job.url)
    if isinstance(job, PingJob):
        return f"PingUrl{job.what} {mask_url(job.url)}"
    return f"Command {job.argv[0]}"


def describe(job: Job) -> str:
    """A job named for the log: task, kind and masked destination."""
    if isinstance(job, PingJob):
        owner = f"task '{job.task}': " if job.task is not None else ""
        return f"{owner}ping{job.what} to {mask_url(job.url)}"
    return f"task '{job.notice.task}': {job.notice.event.value} notice to {describe_channel(job)}"
