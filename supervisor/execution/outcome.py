"""Pure decision of a run's one outcome from what its processes reported and why it was stopped.

Policy, in order:
0. The shim reported that the run could not start (``_wire.StartFailure``: no process, thread, memory or file
   for it) and main() never reported: no outcome of the run at all. ``Decision.start_failure`` carries the
   reason; the loop retries the start (``killed``, "never started", only if it cannot: stopping, unloaded).
1. The task reported that ``main()`` returned: ``ok``, even if a stop request raced with the return.
2. The supervisor stopped the run: the reason it stopped it (``timeout``, ``memory``, ``killed``).
3. ``main()`` raised: ``failed``, with the traceback as the message.
4. The task process ended without reporting: decoded from its wait status: a signal nobody sent on purpose is
   ``crashed`` (with the signal's name), a non-zero exit is ``failed``.
5. The monitor itself never reported (killed from outside): decoded from the monitor's own wait status.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..model import Outcome
from ..signals import signal_name
from . import _wire as wire


@dataclass(frozen=True)
class ProcessReport:
    """What a finished run's processes said, before any interpretation."""

    run_id: str
    returncode: int  # the monitor's; negative = killed by that signal
    task: wire.TaskReport | None  # the task process's report, None if it never wrote one
    monitor: wire.MonitorReport | None  # the monitor's report, None if it died before writing
    output_bytes: int
    output_dropped: int
    start: wire.StartFailure | None = None  # the shim's report that the run could not start


class StopCause(str, enum.Enum):
    """Why the supervisor asked a run to stop."""

    TIMEOUT = "timeout"  # TimeoutSeconds, wall clock
    CPU = "cpu"  # CPUSeconds
    MEMORY = "memory"  # MemoryMB
    SHUTDOWN = "shutdown"  # terminate.py, SIGTERM, Ctrl-C
    PROCESSES = "processes"  # MaxProcesses: a fork failed at the run's process cap


_OUTCOME_OF_CAUSE = {
    StopCause.TIMEOUT: Outcome.TIMEOUT,
    StopCause.CPU: Outcome.TIMEOUT,
    StopCause.MEMORY: Outcome.MEMORY,
    StopCause.SHUTDOWN: Outcome.KILLED,
    # No outcome of its own: `killed`, with a message that names MaxProcesses.
    StopCause.PROCESSES: Outcome.KILLED,
}


@dataclass(frozen=True)
class StopRequest:
    cause: StopCause
    detail: str  # human reason, e.g. "timed out after 3 s (TimeoutSeconds=3)"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    summary: str  # one line for the log and `status`
    message: str | None = None  # returned string or full traceback, for history
    exit_code: int | None = None
    signal: str | None = None
    leftovers: int = 0  # processes still alive after main() returned (killed by the monitor)
    start_failure: str | None = None  # the run never started, for lack of a resource (policy 0): why


def decide_outcome(report: ProcessReport, *, stop: StopRequest | None) -> Decision:
    """The one outcome of a finished run, by the policy above, in its order."""
    task = report.task
    monitor = report.monitor
    status = task.status if task else None
    message = task.message if task else None
    leftovers = monitor.leftovers if monitor else 0
    signalled = monitor.signalled if monitor else 0
    exit_code = monitor.exit_code if monitor else None
    signum = monitor.signal if monitor else None
    sig = signal_name(signum) if signum is not None else None

    def done(outcome: Outcome, summary: str, msg: str | None = message) -> Decision:
        if leftovers and outcome is Outcome.OK:
            summary += f"; {leftovers} leftover process(es) killed after main() returned"
        return Decision(
            outcome=outcome, summary=summary, message=msg, exit_code=exit_code, signal=sig, leftovers=leftovers
        )

    if report.start is not None and task is None:
        why = report.start.message or "the run could not start"
        return Decision(outcome=Outcome.KILLED, summary=f"never started: {why}", start_failure=why)
    if status == wire.STATUS_OK and (exit_code in (0, None)) and signum is None:
        return done(Outcome.OK, "returned" if message is None else f"returned: {_first_line(message)}")
    if stop is not None:
        killed = f"; killed {signalled} process(es)" if signalled else ""
        return done(_OUTCOME_OF_CAUSE[stop.cause], stop.detail + killed, stop.detail + killed)
    if status == wire.STATUS_FAILED:
        return done(Outcome.FAILED, _last_line(message) or "failed", message)
    if monitor is not None:
        if monitor.stop == wire.STOP_SIGTERM:
            return done(Outcome.KILLED, "run's monitor received SIGTERM from outside the supervisor")
        if signum is not None:
            return done(Outcome.CRASHED, f"killed by signal {sig}", f"killed by signal {sig}")
        if exit_code not in (0, None):
            return done(Outcome.FAILED, f"exited with code {exit_code} before main() returned")
        if exit_code == 0:
            return done(Outcome.OK, "exited with code 0 before main() returned")
        return done(Outcome.CRASHED, "the run's process vanished without a status")
    # The monitor never reported: it was killed from outside, or the shim could not start at all.
    if report.returncode < 0:
        name = signal_name(-report.returncode)
        return Decision(
            outcome=Outcome.CRASHED,
            summary=f"run monitor killed by signal {name}",
            message=f"run monitor killed by signal {name}",
            signal=name,
        )
    if report.returncode == wire.EXIT_SUPERVISOR_GONE:
        return Decision(outcome=Outcome.KILLED, summary="supervisor went away while the run started")
    return Decision(
        outcome=Outcome.CRASHED,
        exit_code=report.returncode,
        summary=f"the run could not start (shim exited with code {report.returncode})",
        message=f"the run could not start (shim exited with code {report.returncode})",
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _last_line(text: str | None) -> str:
    if not text or not text.strip():
        return ""
    return text.strip().splitlines()[-1]
