"""The loop's test harness: a fake clock, a fake executor replaying reports and a fake env builder handed to a
real ``Supervisor`` through its seams, with real task folders, discovery, config parsing and SQLite history.

Shared by the loop's test files (test_loop.py, test_loop_sched.py, test_envheal_loop.py, test_notify_loop.py).
"""

from __future__ import annotations

import logging
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from supervisor.core.loop import Supervisor
from supervisor.events import ControlRequest, Event, Inbox, RunReported
from supervisor.execution.executor import RunRequest
from supervisor.execution.outcome import StopRequest
from supervisor.history.recorder import RunHistory
from supervisor.history.store import HistoryStore
from supervisor.logsetup import TaskLogs
from supervisor.model import HomeConfig, Outcome, PhaseChanged, RunFinished, RunMode, RunRecord, RunResult
from supervisor.paths import Paths
from supervisor.scheduling.gates import Probe

UTC = timezone.utc
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
KEY_A = "a" * 16
KEY_B = "b" * 16


class FakeClock:
    """Wall and monotonic time that move only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self.wall = now
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        """The wall clock jumps (NTP, a board without RTC); monotonic time does not."""
        self.wall += timedelta(seconds=seconds)


@dataclass
class FakeProbe:
    """What the start gates read, set by the test (None: cannot be read)."""

    free_mb: float | None = 100_000.0
    load: float | None = 0.0

    def free_memory_mb(self) -> float | None:
        return self.free_mb

    def load_per_core(self) -> float | None:
        return self.load


class FakeExecutor:
    """Records launches; the test ends runs by replaying the report the loop would get."""

    def __init__(self, post: Any, clock: FakeClock) -> None:
        self.post = post
        self.clock = clock
        self.launched: list[RunRequest] = []
        self.live: dict[str, RunRequest] = {}
        self.stops: list[tuple[str, StopRequest]] = []
        self.init_outcome: Outcome | None = Outcome.OK  # None: initialize() calls stay in flight
        self.fail_next: tuple[RunMode, Exception] | None = None  # the next launch of that mode raises

    def launch(self, request: RunRequest) -> None:
        if self.fail_next is not None and self.fail_next[0] is request.mode:
            error, self.fail_next = self.fail_next[1], None
            raise error
        self.launched.append(request)
        self.live[request.run_id] = request
        if request.mode is RunMode.INITIALIZE and self.init_outcome is not None:
            self.finish(request.run_id, self.init_outcome)

    def finish(self, run_id: str, outcome: Outcome = Outcome.OK, *, message: str | None = None) -> None:
        request = self.live.pop(run_id)
        result = RunResult(
            run_id=run_id,
            task=request.task,
            mode=request.mode,
            env_key=request.env_key,
            outcome=outcome,
            summary=outcome.value,
            finished=self.clock.now(),
            duration_s=1.0,
            message=message,
        )
        self.post(RunReported(lambda: result))

    def mains(self, task: str | None = None) -> list[RunRequest]:
        return [r for r in self.launched if r.mode is RunMode.MAIN and task in (None, r.task)]

    def live_main(self, task: str) -> str:
        return next(r.run_id for r in self.live.values() if r.task == task and r.mode is RunMode.MAIN)

    def stop(self, run_id: str, stop: StopRequest, *, kill_now: bool = False) -> None:
        self.stops.append((run_id, stop))

    def stop_all(self, stop: StopRequest) -> None:
        for run_id in list(self.live):
            self.stop(run_id, stop)
            self.finish(run_id, Outcome.KILLED)

    def enforce(self) -> None:
        pass

    def next_wakeup(self) -> float | None:
        return None

    def waiting_on(self, run_id: str) -> str | None:
        return None

    def recover(self) -> list[int]:
        return []

    def close(self) -> None:
        pass


@dataclass
class FakeEnvs:
    """Env keys from the first line of requirements.txt; builds finish when the test posts EnvBuilt."""

    root: Path
    ready: set[str] = field(default_factory=lambda: {KEY_A})
    builds: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # tasks whose key cannot be computed (a bug, a bad file)
    gone: dict[str, str] = field(default_factory=dict)  # env key -> why its interpreter is gone

    @property
    def installer(self) -> str:
        return "fake"

    def key_for(self, requirements: Path, *, task_dir: Path) -> str:
        if task_dir.name in self.broken:
            raise RuntimeError("key computation exploded")
        text = requirements.read_text().strip() if requirements.exists() else ""
        return KEY_B if text == "b" else KEY_A

    def is_ready(self, key: str) -> bool:
        return key in self.ready

    def broken_reason(self, key: str) -> str | None:
        return self.gone.get(key)

    def env_dir(self, key: str) -> Path:
        return self.root / key

    def python_for(self, key: str) -> Path:
        return self.root / key / "bin" / "python"

    def build(self, key: str, *, task: str, requirements: Path, task_dir: Path) -> None:
        self.builds.append(key)

    def collect(self, keep: Iterable[str]) -> list[str]:
        return []

    def close(self) -> None:
        pass


class Harness:
    def __init__(
        self,
        home: Path,
        *,
        home_config: HomeConfig = HomeConfig(),
        records: HistoryStore | None = None,
        gate_probe: Probe | None = None,
    ) -> None:
        self.paths = Paths(home)
        self.paths.ensure()
        self.clock = FakeClock(START)
        self.inbox = Inbox()
        self.executor = FakeExecutor(self.inbox.post, self.clock)
        self.envs = FakeEnvs(self.paths.envs)
        self.records = records or HistoryStore(self.paths.database)
        logger = logging.getLogger(f"test.loop.{home.name}")
        logger.propagate = False
        self.task_logs = TaskLogs(self.paths.task_logs, max_bytes=1 << 20, backups=0)
        self.history = RunHistory(self.records, logger=logger, keep_runs=1000)
        self.facts: list[RunFinished] = []
        self.moves: list[PhaseChanged] = []  # every lifecycle move, as the move listeners get them
        self.sup = Supervisor(
            self.paths,
            home_config=home_config,
            clock=self.clock,
            tz=UTC,
            logger=logger,
            task_logs=self.task_logs,
            inbox=self.inbox,
            executor=self.executor,
            envs=self.envs,
            history=self.history,
            consumers=[self.history, self.facts.append],
            max_inits=2,
            move_listeners=[self.moves.append],
            gate_probe=gate_probe,
        )

    def write(
        self,
        name: str,
        *,
        every: float = 60,
        extra: str = "",
        requirements: str = "",
        main: str = "def main():\n    return 'ok'\n",
    ) -> None:
        folder = self.paths.task_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(main)
        (folder / "config.ini").write_text(f"[Frequency]\nEveryXMinutes = {every}\n" + textwrap.dedent(extra))
        (folder / "requirements.txt").write_text(requirements)

    def post(self, event: Event) -> None:
        self.inbox.post(event)

    def settle(self) -> None:
        """Let the loop run turns until it has nothing left to handle (what ``run`` does between sleeps)."""
        self.sup.rescan_wanted = True
        for _ in range(50):
            self.sup.turn()
            before = self.inbox._queue.qsize()
            self.sup.drain()
            if before == 0:
                return
        raise AssertionError("the loop did not settle")

    def request(self, command: str, **args: Any) -> Any:
        """A control request as the control socket hands it to the loop; returns the reply."""
        replies: list[Any] = []
        self.post(ControlRequest(command, args, replies.append))
        self.settle()
        (reply,) = replies
        return reply

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.settle()

    def state(self, name: str) -> str:
        return next(t["state"] for t in self.sup.status()["tasks"] if t["name"] == name)

    def task(self, name: str) -> dict[str, Any]:
        return next(t for t in self.sup.status()["tasks"] if t["name"] == name)

    def rows(self, name: str) -> list[RunRecord]:
        return list(reversed(self.records.history(name, limit=100)))  # oldest first


@contextmanager
def started_harness(home: Path, *, home_config: HomeConfig = HomeConfig()) -> Iterator[Harness]:
    """A Harness whose supervisor has started; its history and task logs are closed afterwards."""
    harness = Harness(home, home_config=home_config)
    harness.sup.start()
    try:
        yield harness
    finally:
        harness.records.close()
        harness.task_logs.close()
