"""Assemble and run a supervisor on a home: lock, logs, history, envs, watcher, control socket, signals.

The loop runs on the calling (main) thread: signal handlers run there, and every run is spawned there, which
keeps each monitor's PDEATHSIG tied to a thread that lives as long as the supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .clock import Clock, SystemClock
from .config.schema import read_home_config
from .core.lifecycle import MoveListener, move_log_line
from .core.loop import Supervisor
from .core.outputs import OutputRetention
from .core.snapshot import StatusBoard, StatusReader
from .discovery.watcher import TaskWatcher
from .envs.builder import BackgroundEnvs
from .envs.manager import EnvManager
from .errors import HistoryStoreError
from .events import ControlRequest, Inbox
from .execution.cgroups import Containment
from .execution.executor import Executor, LocalExecutor
from .execution.forkserver import fork_pool_for
from .execution.secrets import SecretStore
from .history.recorder import RunHistory, RunLog
from .history.store import HistoryStore
from .history.writebehind import WriteBehindStore
from .logsetup import TaskLogs, setup_supervisor_logging
from .model import HomeConfig, NotifySettings, PhaseChanged, RunFinished, RunStarted, TaskPhase
from .notify.consumer import RunNotifications
from .notify.heartbeat import Heartbeat
from .notify.notifier import Notifier, default_origin
from .notify.timers import history_seeds
from .notify.watch import watched as timed_keys_set
from .paths import Paths
from .scheduling.windows import local_zone
from .system.control import ControlServer, InstanceLock
from .system.fdlimit import raise_fd_limit
from .system.sdnotify import LoopNotifier, SdNotifier
from .system.webchild import start_web_child

CONTROL_REPLY_TIMEOUT_S = 10.0


def serve(paths: Paths, *, console: bool = True, before_answer: Callable[[str], None] | None = None) -> int:
    """Run the supervisor in the foreground until stopped. Returns the process exit code.

    ``before_answer`` is a test seam (a slowed control socket): called with each control command before its
    reply is computed; None in the product."""
    # Read (and take out of the environment every run inherits) systemd's NOTIFY_SOCKET / WATCHDOG_USEC first.
    notifier = SdNotifier.from_environ(os.environ, pid=os.getpid(), logger=logging.getLogger("taskautomation"))
    paths.ensure()
    lock = InstanceLock(paths)
    lock.acquire()  # AlreadyRunningError propagates to the CLI edge as one line
    try:
        home_config, warnings = read_home_config(paths.home_config)
        logger = setup_supervisor_logging(
            paths.supervisor_log, max_bytes=home_config.log_max_bytes, backups=home_config.log_backups, console=console
        )
        if notifier.enabled:
            watchdog = f"{notifier.watchdog_s:g} s" if notifier.watchdog_s is not None else "off"
            logger.info("systemd notification socket in use (watchdog %s)", watchdog)
        for warning in warnings:
            logger.warning("%s", warning)
        records = WriteBehindStore.wrap(
            open_history(paths.database, keep=home_config.keep_runs, logger=logger), logger=logger
        )
        try:
            _serve_with(
                paths,
                home_config=home_config,
                records=records,
                logger=logger,
                notifier=notifier,
                before_answer=before_answer,
            )
        finally:
            records.close()
    finally:
        lock.release()
    return 0


def _serve_with(
    paths: Paths,
    *,
    home_config: HomeConfig,
    records: HistoryStore,
    logger: logging.Logger,
    notifier: SdNotifier,
    before_answer: Callable[[str], None] | None,
) -> None:
    """The supervisor and its threads (control socket, dashboard child, notices, heartbeat) for one run."""
    fd_limit = raise_fd_limit()
    logger.info("%s", fd_limit.describe())
    notices = Notifier(origin=default_origin(paths.home), logger=logger, task_log=paths.task_log)
    task_logs = TaskLogs(paths.task_logs, max_bytes=home_config.log_max_bytes, backups=home_config.log_backups)
    outputs = OutputRetention(paths.task_output, clock=SystemClock(), logger=logger, task_logs=task_logs)
    supervisor = build_supervisor(
        paths,
        home_config=home_config,
        records=records,
        envs=EnvManager(paths, installer=home_config.installer, logger=logging.getLogger("taskautomation.envs")),
        clock=SystemClock(),
        logger=logger,
        task_logs=task_logs,
        notices=notices,
        outputs=outputs,
        secrets=SecretStore(paths.home_secrets, paths.task_secrets, warn=logger.warning),
        containment=Containment(paths.home, task_nofile=fd_limit.before if fd_limit.after != fd_limit.before else None),
        watcher_factory=lambda on_change: TaskWatcher(
            paths.tasks, on_change, debounce_s=home_config.watch_debounce_s, logger=logger
        ),
        notifier=LoopNotifier(notifier),
    )
    server, status = control_server(paths, supervisor, logger=logger, before_answer=before_answer)
    server.start()
    web = start_web_child(paths, home_config.web_listen, logger=logger) if home_config.web_listen else None
    previous = _install_signal_handlers(supervisor)
    notices.start()
    notices.watch(
        now=supervisor.clock.now,
        tasks=timed_tasks(supervisor.board),
        seed=history_seeds(lambda: HistoryStore(paths.database, readonly=True), logger=logger),
    )
    heartbeat = None
    if home_config.heartbeat.url is not None:
        heartbeat = Heartbeat(home_config.heartbeat, logger=logger, healthy=supervisor.health)
        heartbeat.start()
    try:
        supervisor.run()
    finally:
        _restore_signal_handlers(previous)
        if web is not None:
            web.stop()
        server.stop()
        status.close()
        if heartbeat is not None:
            heartbeat.stop()
        notices.close(drain_s=2.0)  # queued notices get 2 s; a hanging receiver cannot hold the exit
        outputs.close()


def timed_tasks(board: StatusBoard) -> Callable[[], Mapping[str, NotifySettings]]:
    """The tasks the timer of timed notices watches: scheduled (not paused), with a channel and a timed key
    (ExpectOkWithin, SlowAfterSeconds, SlowFactor, RepeatEvery). Rebuilt only when a new snapshot is out."""
    seen: list[object] = [None]
    watched: dict[str, NotifySettings] = {}

    def tasks() -> Mapping[str, NotifySettings]:
        nonlocal watched
        snapshot = board.latest()
        if snapshot is not seen[0] and snapshot is not None:
            seen[0] = snapshot
            watched = {
                view.name: view.spec.notify
                for view in snapshot.tasks
                if view.spec is not None and view.phase is TaskPhase.SCHEDULED and timed_keys_set(view.spec.notify)
            }
        return watched

    return tasks


def control_server(
    paths: Paths,
    supervisor: Supervisor,
    *,
    logger: logging.Logger,
    before_answer: Callable[[str], None] | None = None,
) -> tuple[ControlServer, StatusReader]:
    """The control socket of ``supervisor`` (not started). ``status`` is answered on the socket's own thread
    from the loop's latest snapshot, with its own read-only history connection; every other request is
    handed to the loop thread and waits for its reply."""
    status = StatusReader(
        supervisor.board,
        open_records=lambda: HistoryStore(paths.database, readonly=True),
        tz=supervisor.tz,
        logger=logger,
        wait_s=CONTROL_REPLY_TIMEOUT_S,
    )

    def handle(command: str, args: Mapping[str, Any]) -> Mapping[str, Any] | bytes:
        return status.reply() if command == "status" else _ask_loop(supervisor, command, args)

    return ControlServer(paths.control_socket, handle, before_answer=before_answer), status


def build_supervisor(
    paths: Paths,
    *,
    home_config: HomeConfig,
    records: HistoryStore,
    envs: EnvManager,
    clock: Clock,
    logger: logging.Logger,
    task_logs: TaskLogs,
    notices: Notifier | None = None,
    secrets: SecretStore | None = None,
    containment: Containment | None = None,
    move_listeners: Sequence[MoveListener] = (),
    outputs: OutputRetention | None = None,
    **options: Any,
) -> Supervisor:
    """The loop with its real collaborators: a local executor (with the tasks' secrets), background env
    builds, the run history and the run-finished consumers (history first, then the outcome log lines, then
    notifications, then ``outputs``: [Output] retention), the run-started listeners (the /start ping), and the
    move listener that writes one DEBUG line per lifecycle move to the supervisor log (a child logger: the
    file gets it, the console does not). ``containment`` None = the cgroups this machine offers (detected)."""
    inbox = Inbox()
    history = RunHistory(records, logger=logger, keep_runs=home_config.keep_runs)
    executor = _executor(
        paths,
        home_config=home_config,
        inbox=inbox,
        clock=clock,
        logger=logger,
        task_logs=task_logs,
        secrets=secrets,
        containment=containment if containment is not None else Containment(paths.home),
    )
    consumers: list[Callable[[RunFinished], None]] = [history, RunLog(logger=logger, task_logs=task_logs)]
    listeners: list[Callable[[RunStarted], None]] = []
    if notices is not None:
        notifications = RunNotifications(
            notices, secrets=secrets, streak_before=lambda task, run_id: history.failure_streak(task, excluding=run_id)
        )
        consumers.append(notifications)
        listeners.append(notifications.run_started)
    if outputs is not None:
        consumers.append(outputs)
        listeners.append(outputs.run_started)
    return Supervisor(
        paths,
        home_config=home_config,
        clock=clock,
        tz=local_zone(),
        logger=logger,
        task_logs=task_logs,
        inbox=inbox,
        executor=executor,
        envs=BackgroundEnvs(envs, envs_dir=paths.envs, post=inbox.post),
        history=history,
        consumers=consumers,
        start_listeners=listeners,
        move_listeners=[_move_log(logger), *move_listeners],
        **options,
    )


def _executor(
    paths: Paths,
    *,
    home_config: HomeConfig,
    inbox: Inbox,
    clock: Clock,
    logger: logging.Logger,
    task_logs: TaskLogs,
    secrets: SecretStore | None,
    containment: Containment,
) -> Executor:
    """Where runs execute: here (``LocalExecutor``), or for ``Executor = rq`` runs of main() on RQ workers
    (initialize() still runs here)."""
    executor: Executor = LocalExecutor(
        home=paths.home,
        cookie_prefix=paths.run_cookie_prefix,
        task_logs=task_logs,
        logger=logger,
        clock=clock,
        post=inbox.post,
        output_cap_bytes=home_config.output_cap_bytes,
        secrets=secrets,
        containment=containment,
        fork_pool=fork_pool_for(home_config.launcher, cookie_prefix=paths.run_cookie_prefix, logger=logger),
    )
    if home_config.executor != "rq":
        return executor
    from .scaleout.executor import RQExecutor, home_id_for  # the optional extra: imported only when used

    assert home_config.redis_url is not None  # config.py refuses Executor=rq without RedisUrl
    remote = RQExecutor(
        local=executor,
        redis_url=home_config.redis_url,
        home_id=home_id_for(paths.home),
        installer=home_config.installer,
        output_cap_bytes=home_config.output_cap_bytes,
        task_logs=task_logs,
        logger=logger,
        clock=clock,
        post=inbox.post,
    )
    logger.info("executor: rq on %s (runs of main() go to RQ workers; initialize() runs here)", remote.safe_url())
    return remote


def _move_log(logger: logging.Logger) -> Callable[[PhaseChanged], None]:
    moves = logger.getChild("moves")
    moves.setLevel(logging.DEBUG)
    return lambda fact: moves.debug("%s", move_log_line(fact))


def open_history(path: Path, *, keep: int, logger: logging.Logger) -> HistoryStore:
    """Open the run history for writing and prune it to ``keep`` runs per task.

    Policy for a corrupt history (not an SQLite file, or a damaged one): move it aside and start an empty
    one, loudly. A 24/7 supervisor must not stay down because its *record* of runs is damaged; the tasks
    matter more. Nothing is deleted: the file (and its ``-wal``/``-shm`` side files, which must never be
    applied to the new database) is renamed to ``history.sqlite3.corrupt-<UTC time>`` next to it, and an
    ERROR line in the supervisor log and on the console names both files. The price: schedule anchors are
    lost, so every task counts as never run and runs once when next inside its window.

    Only corruption is handled this way. A locked database, an unreadable one (permissions) or one with a
    newer schema is refused with one line (exit 1): moving a healthy history aside would lose it. Opening
    and the start-up prune read the whole table, so damage anywhere in it is found here, not mid-run.
    """
    try:
        return _open_and_prune(path, keep=keep, logger=logger)
    except HistoryStoreError as exc:
        if not _is_corruption(exc):
            raise
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                source.rename(Path(f"{aside}{suffix}"))
        logger.error(
            "run history %s is corrupt (%s): moved it aside to %s and started an empty history; "
            "past runs are not shown and every task counts as never run",
            path,
            exc.__cause__,
            aside,
        )
        return _open_and_prune(path, keep=keep, logger=logger)


def _open_and_prune(path: Path, *, keep: int, logger: logging.Logger) -> HistoryStore:
    records = HistoryStore(path)
    try:
        pruned = records.prune(keep=keep)
    except BaseException:
        records.close()
        raise
    if pruned:
        logger.info("run history: pruned %d old row(s) (KeepRuns=%d)", pruned, keep)
    return records


def _is_corruption(exc: HistoryStoreError) -> bool:
    """True for SQLITE_NOTADB / SQLITE_CORRUPT, which Python raises as a bare ``sqlite3.DatabaseError``
    (busy, locked, I/O and permission errors are ``OperationalError`` subclasses and are not corruption)."""
    cause = exc.__cause__
    name = getattr(cause, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")  # extended codes too
    return type(cause) is sqlite3.DatabaseError


def _ask_loop(supervisor: Supervisor, command: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
    """Forward a control request to the loop thread and wait for its reply."""
    done = threading.Event()
    box: list[Mapping[str, Any]] = []

    def reply(answer: Mapping[str, Any]) -> None:
        box.append(answer)
        done.set()

    supervisor.post(ControlRequest(command=command, args=args, reply=reply))
    if not done.wait(CONTROL_REPLY_TIMEOUT_S):
        error = f"the supervisor's loop did not answer within {CONTROL_REPLY_TIMEOUT_S:g} s"
        return {"ok": False, "error": error, "code": "busy"}  # readers fall back, the dashboard answers 503
    return box[0]


def _install_signal_handlers(supervisor: Supervisor) -> dict[int, Any]:
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.request_stop(f"received {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[sig] = signal.signal(sig, on_signal)
    return previous


def _restore_signal_handlers(previous: Mapping[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
