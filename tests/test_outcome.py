"""outcome.decide_outcome: every combination of what the processes reported and why they were stopped -> one outcome."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from supervisor.execution._wire import parse_reports
from supervisor.execution.outcome import ProcessReport, StopCause, StopRequest, decide_outcome
from supervisor.model import Outcome


def report(
    *,
    task: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = None,
    start: dict[str, Any] | None = None,
    returncode: int = 0,
) -> ProcessReport:
    """The report as the runner builds it: the JSON lines on the report pipe, decoded once."""
    lines = b"".join(json.dumps(line).encode() + b"\n" for line in (start, task, monitor) if line is not None)
    task_report, monitor_report, start_report = parse_reports(b"garbage\n" + lines)
    return ProcessReport(
        run_id="r",
        returncode=returncode,
        task=task_report,
        monitor=monitor_report,
        output_bytes=0,
        output_dropped=0,
        start=start_report,
    )


def monitor(
    *,
    exit_code: int | None = 0,
    sig: int | None = None,
    stop: str | None = None,
    leftovers: int = 0,
    signalled: int = 0,
) -> dict[str, Any]:
    return {
        "kind": "monitor",
        "exit_code": exit_code,
        "signal": sig,
        "stop": stop,
        "leftovers": leftovers,
        "signalled": signalled,
    }


OK_TASK = {"kind": "task", "status": "ok", "message": "all done\nsecond line"}
FAILED_TASK = {"kind": "task", "status": "failed", "message": "Traceback ...\nValueError: boom\n"}
TIMEOUT = StopRequest(StopCause.TIMEOUT, "timed out after 3 s (TimeoutSeconds=3)")


def test_returned_is_ok_with_the_first_line_as_summary() -> None:
    d = decide_outcome(report(task=OK_TASK, monitor=monitor()), stop=None)
    assert (d.outcome, d.summary, d.message, d.exit_code) == (Outcome.OK, "returned: all done", OK_TASK["message"], 0)


def test_returned_none_is_ok() -> None:
    d = decide_outcome(report(task={"kind": "task", "status": "ok", "message": None}, monitor=monitor()), stop=None)
    assert d.outcome is Outcome.OK and d.summary == "returned" and d.message is None


def test_leftovers_are_counted_in_the_summary_but_the_run_stays_ok() -> None:
    d = decide_outcome(report(task=OK_TASK, monitor=monitor(stop="leftovers", leftovers=2, signalled=2)), stop=None)
    assert d.outcome is Outcome.OK and d.leftovers == 2
    assert d.summary.endswith("; 2 leftover process(es) killed after main() returned")


def test_a_return_that_races_a_stop_request_is_still_ok() -> None:
    d = decide_outcome(report(task=OK_TASK, monitor=monitor(stop="stop")), stop=TIMEOUT)
    assert d.outcome is Outcome.OK


@pytest.mark.parametrize(
    "cause, outcome",
    [
        (StopCause.TIMEOUT, Outcome.TIMEOUT),
        (StopCause.CPU, Outcome.TIMEOUT),
        (StopCause.MEMORY, Outcome.MEMORY),
        (StopCause.SHUTDOWN, Outcome.KILLED),
    ],
)
def test_a_stopped_run_gets_the_reason_it_was_stopped(cause: StopCause, outcome: Outcome) -> None:
    d = decide_outcome(
        report(monitor=monitor(exit_code=None, sig=signal.SIGTERM, stop="stop", signalled=5)),
        stop=StopRequest(cause, "because"),
    )
    assert d.outcome is outcome
    assert d.summary == "because; killed 5 process(es)" and d.signal == "SIGTERM"


def test_an_exception_is_failed_with_the_traceback_as_message_and_its_last_line_as_summary() -> None:
    d = decide_outcome(report(task=FAILED_TASK, monitor=monitor(exit_code=1)), stop=None)
    assert (d.outcome, d.summary, d.message, d.exit_code) == (
        Outcome.FAILED,
        "ValueError: boom",
        FAILED_TASK["message"],
        1,
    )


def test_a_signal_nobody_sent_is_crashed_with_its_name() -> None:
    d = decide_outcome(report(monitor=monitor(exit_code=None, sig=signal.SIGSEGV)), stop=None)
    assert (d.outcome, d.signal, d.summary) == (Outcome.CRASHED, "SIGSEGV", "killed by signal SIGSEGV")


def test_a_monitor_sigtermed_from_outside_is_killed() -> None:
    d = decide_outcome(report(monitor=monitor(exit_code=None, sig=signal.SIGTERM, stop="sigterm")), stop=None)
    assert d.outcome is Outcome.KILLED


def test_a_silent_non_zero_exit_is_failed() -> None:
    d = decide_outcome(report(monitor=monitor(exit_code=3)), stop=None)
    assert (d.outcome, d.exit_code) == (Outcome.FAILED, 3)
    assert "exited with code 3" in d.summary


def test_a_silent_zero_exit_is_ok() -> None:
    d = decide_outcome(report(monitor=monitor(exit_code=0)), stop=None)
    assert d.outcome is Outcome.OK and "before main() returned" in d.summary


def test_a_monitor_killed_from_outside_is_decoded_from_its_own_wait_status() -> None:
    d = decide_outcome(report(returncode=-signal.SIGKILL), stop=None)
    assert (d.outcome, d.signal) == (Outcome.CRASHED, "SIGKILL")
    assert d.summary == "run monitor killed by signal SIGKILL"


def test_a_shim_that_found_the_supervisor_gone_is_killed() -> None:
    assert decide_outcome(report(returncode=3), stop=None).outcome is Outcome.KILLED


def test_a_shim_that_could_not_start_is_crashed_with_its_exit_code() -> None:
    d = decide_outcome(report(returncode=1), stop=None)
    assert (d.outcome, d.exit_code) == (Outcome.CRASHED, 1) and "could not start" in d.summary
    assert d.start_failure is None


START = {"kind": "start", "stage": "fork", "message": "the shim could not fork the task process: [Errno 11] x"}


@pytest.mark.parametrize(
    "reports",
    [
        {"start": START, "returncode": 4},  # the shim's own fork() failed
        {"start": {**START, "stage": "contain"}, "monitor": monitor(exit_code=4)},  # the task process could not enter
        {"start": START, "returncode": 4, "stop": True},  # even while a stop was asked for
    ],
)
def test_a_start_that_failed_for_lack_of_a_resource_is_no_outcome_but_a_start_failure(reports: dict[str, Any]) -> None:
    stop = StopRequest(StopCause.SHUTDOWN, "stopped by supervisor shutdown") if reports.pop("stop", False) else None
    d = decide_outcome(report(**reports), stop=stop)
    assert d.start_failure == START["message"]
    assert d.outcome is Outcome.KILLED and d.summary == "never started: " + START["message"]


def test_a_task_that_reported_wins_over_a_start_line() -> None:
    """A start line next to the task's own report cannot be a start failure: main() ran."""
    d = decide_outcome(
        report(start=START, task={"kind": "task", "status": "ok", "message": None}, monitor=monitor()), stop=None
    )
    assert d.outcome is Outcome.OK and d.start_failure is None


def test_garbage_in_the_report_is_tolerated() -> None:
    d = decide_outcome(
        report(
            task={"kind": "task", "status": "ok", "message": 42},
            monitor={"kind": "monitor", "exit_code": "0", "signal": True, "leftovers": None},
        ),
        stop=None,
    )
    assert d.outcome is Outcome.OK and d.message is None
