"""Assemble and run a supervisor on a home: lock, logs, history, envs, watcher, control socket, signals.

The loop runs on the calling (main) thread: signal handlers run there, and every run is spawned there, which
keeps each monitor's PDEATHSIG tied to a thread that lives as long as the supervisor.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Mapping

from .clock import SystemClock
from .config import read_home_config
from .control import ControlServer, InstanceLock
from .envs import EnvManager
from .events import ControlRequest
from .logsetup import TaskLogs, setup_supervisor_logging
from .loop import Supervisor
from .paths import Paths
from .records import Records
from .schedule import local_zone
from .watcher import TaskWatcher

CONTROL_REPLY_TIMEOUT_S = 10.0
WATCH_DEBOUNCE_S = 1.0


def serve(paths: Paths, *, console: bool = True, debounce_s: float = WATCH_DEBOUNCE_S) -> int:
    """Run the supervisor in the foreground until stopped. Returns the process exit code."""
    paths.ensure()
    lock = InstanceLock(paths.lock_file)
    lock.acquire()  # AlreadyRunningError propagates to the CLI edge as one line
    try:
        home_config, warnings = read_home_config(paths.home_config)
        logger = setup_supervisor_logging(paths.supervisor_log, max_bytes=home_config.log_max_bytes,
                                          backups=home_config.log_backups, console=console)
        for warning in warnings:
            logger.warning("%s", warning)
        records = Records(paths.database)
        try:
            pruned = records.prune(keep=home_config.keep_runs)
            if pruned:
                logger.info("run history: pruned %d old row(s) (KeepRuns=%d)", pruned, home_config.keep_runs)
            envs = EnvManager(paths, installer=home_config.installer,
                              logger=logging.getLogger("taskautomation.envs"))
            task_logs = TaskLogs(paths.task_logs, max_bytes=home_config.log_max_bytes,
                                 backups=home_config.log_backups)
            supervisor = Supervisor(
                paths, home_config=home_config, records=records, envs=envs, clock=SystemClock(),
                tz=local_zone(), logger=logger, task_logs=task_logs,
                watcher_factory=lambda on_change: TaskWatcher(paths.tasks, on_change, debounce_s=debounce_s,
                                                              logger=logger))
            server = ControlServer(paths.control_socket, lambda cmd, args: _ask_loop(supervisor, cmd, args))
            server.start()
            previous = _install_signal_handlers(supervisor)
            try:
                supervisor.run()
            finally:
                _restore_signal_handlers(previous)
                server.stop()
        finally:
            records.close()
    finally:
        lock.release()
    return 0


def _ask_loop(supervisor: Supervisor, command: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
    """Forward a control request to the loop thread and wait for its reply."""
    done = threading.Event()
    box: list[Mapping[str, Any]] = []

    def reply(answer: Mapping[str, Any]) -> None:
        box.append(answer)
        done.set()

    supervisor.post(ControlRequest(command=command, args=args, reply=reply))
    if not done.wait(CONTROL_REPLY_TIMEOUT_S):
        return {"ok": False, "error": f"the supervisor's loop did not answer within {CONTROL_REPLY_TIMEOUT_S:g} s"}
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
