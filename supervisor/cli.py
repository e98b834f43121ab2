"""Command line: ``python3 -m supervisor COMMAND`` / ``taskautomation COMMAND`` (docs/cli.md).

Exit codes: 0 success; 1 the command failed (no supervisor running for stop/run-now, a task refused a
run, validation found errors, a runtime error); 2 bad usage. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import NotRunningError, TaskAutomationError
from .paths import Paths

TERMINATE_TIMEOUT_S = 600.0


def _parser(prog: str) -> argparse.ArgumentParser:
    # --home is accepted before and after the subcommand: the sub-parsers' copy must not overwrite a value
    # given before the subcommand, hence SUPPRESS there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS,
                        help="folder holding Tasks/, envs/, logs/ (default: $TASKAUTOMATION_HOME, else the "
                             "folder of main.py / the current folder)")
    parser = argparse.ArgumentParser(prog=prog, parents=[common],
                                     description="Run Python task folders on schedule, each in its own "
                                                 "virtualenv, as contained child processes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("run", parents=[common], help="run the supervisor in the foreground")
    sub.add_parser("stop", parents=[common], help="stop the running supervisor and wait until it is gone")
    p = sub.add_parser("status", parents=[common], help="every task: state, next run, last run")
    p.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    p = sub.add_parser("history", parents=[common], help="the runs of one task, newest first")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("run-now", parents=[common], help="start a run of a task now")
    p.add_argument("name")
    p = sub.add_parser("logs", parents=[common], help="print a task's log")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines to show first (default 50)")
    p = sub.add_parser("validate", parents=[common], help="check task folders without running anything")
    p.add_argument("name", nargs="?")
    p = sub.add_parser("new", parents=[common], help="create a new task folder from a template")
    p.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "taskautomation",
         default_home: Path | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    paths = Paths.resolve(getattr(args, "home", None), default=default_home or Path.cwd())
    command: Callable[[argparse.Namespace, Paths], int] = COMMANDS[args.command]
    try:
        return command(args, paths)
    except TaskAutomationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file we had to read or write: still one line, never a traceback
        print(f"{prog}: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # run by a python3 that lacks the dependencies
        print(f"{prog}: missing dependency {exc.name!r} for {sys.executable}; install the package first "
              f"(python3 -m venv .venv && .venv/bin/pip install -e .) and use .venv/bin/python", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------------------------------------------- run/stop
def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    from .service import serve

    return serve(paths)


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    from .control import terminate

    start = time.monotonic()
    pid = terminate(paths, timeout=TERMINATE_TIMEOUT_S, on_progress=lambda line: print(line, file=sys.stderr))
    print(f"supervisor (pid {pid}) on {paths.home} stopped in {time.monotonic() - start:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------------- status
def _live(paths: Paths, command: str, args: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Ask the running supervisor; None when none is running."""
    from .control import lock_is_held, request

    if not lock_is_held(paths.lock_file):
        return None
    try:
        return request(paths.control_socket, command, args)
    except NotRunningError:
        return None


def offline_status(paths: Paths) -> dict[str, Any]:
    """Status from the task folders and the history database when no supervisor runs."""
    from .config import read_home_config, read_task_config
    from .discovery import scan_tasks
    from .records import Records
    from .status import offline_row, offline_status_json

    home_config, _ = read_home_config(paths.home_config)
    records = Records(paths.database, readonly=True)
    try:
        rows = []
        for name in scan_tasks(paths.tasks):
            enabled, error = True, None
            try:
                enabled = read_task_config(paths.task_config(name), task=name, defaults=home_config.limits).spec.enabled
            except TaskAutomationError as exc:
                error = str(exc)
            rows.append(offline_row(name, enabled=enabled, error=error, last=records.last_finished(name)))
        return offline_status_json(rows)
    finally:
        records.close()


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    reply = _live(paths, "status")
    if reply is not None and not reply.get("ok"):
        raise TaskAutomationError(str(reply.get("error")))
    status = reply["status"] if reply is not None else offline_status(paths)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    sup = status.get("supervisor")
    print(f"supervisor: running (pid {sup['pid']}, since {_short(sup['started'])})" if sup
          else f"supervisor: not running on {paths.home}")
    rows = [("TASK", "STATE", "NEXT RUN", "LAST RUN", "OUTCOME", "DURATION")]
    for task in status["tasks"]:
        last = task["last_run"] or {}
        duration = last.get("duration_s")
        rows.append((task["name"], task["state"], _short(task["next_run"]), _short(last.get("started")),
                     last.get("outcome") or "-", f"{duration:.2f} s" if duration is not None else "-"))
    _print_table(rows)
    notes = [f"  {t['name']}: {t['why']}" for t in status["tasks"]
             if sup and t.get("why") and t["state"] not in ("error", "env-failed")]
    if notes:
        print("\nwhy:")
        print("\n".join(notes))
    for task in status["tasks"]:
        if task.get("error"):
            print(f"\n{task['error']}")  # every error already starts with "task 'NAME': ..."
    return 0


def cmd_history(args: argparse.Namespace, paths: Paths) -> int:
    from .records import Records
    from .status import history_json

    records = Records(paths.database, readonly=True)
    try:
        runs = records.history(args.name, limit=max(1, args.limit))
    finally:
        records.close()
    if not runs and not paths.task_dir(args.name).is_dir():
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks} and no history for it")
    if args.json:
        print(json.dumps(history_json(runs), indent=2))
        return 0
    rows = [("RUN", "TRIGGER", "STARTED", "OUTCOME", "DURATION", "PEAK MB", "MESSAGE")]
    for r in runs:
        message = (r.message or "").strip().splitlines()
        rows.append((r.run_id, r.trigger.value, _short(r.started.isoformat()),
                     r.outcome.value if r.outcome else "running",
                     f"{r.duration_s:.2f} s" if r.duration_s is not None else "-",
                     f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "-", (message[-1] if message else "")[:60]))
    _print_table(rows)
    return 0


def cmd_run_now(args: argparse.Namespace, paths: Paths) -> int:
    reply = _live(paths, "run-now", {"name": args.name})
    if reply is None:
        raise NotRunningError(f"no supervisor is running on {paths.home}; start it with main.py")
    if not reply.get("ok"):
        raise TaskAutomationError(str(reply.get("error")))
    print(f"started run {reply['run_id']} of {args.name!r}")
    return 0


def cmd_logs(args: argparse.Namespace, paths: Paths) -> int:
    """Print the last lines of a task's log; with -f keep printing, across rotations, until Ctrl-C."""
    log = paths.task_log(args.name)
    if not log.exists():
        if not paths.task_dir(args.name).is_dir():
            raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks}")
        raise TaskAutomationError(f"{log} does not exist yet (the task has not been loaded)")
    f = open(log, "rb")
    try:
        lines = f.read().splitlines()[-args.lines:] if args.lines > 0 else []
        for line in lines:
            sys.stdout.write(line.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
        if not args.follow:
            return 0
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
                continue
            try:
                rotated = os.stat(log).st_ino != os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                rotated = False  # between the rename and the new file: look again shortly
            if rotated:
                f.close()
                f = open(log, "rb")  # the rest of the old file was read above; go on with the new one
                continue
            time.sleep(0.25)  # a log follower polls, like tail -f; nothing here waits on the supervisor
    finally:
        f.close()


# ---------------------------------------------------------------------------------------------------- validate
def cmd_validate(args: argparse.Namespace, paths: Paths) -> int:
    from .validate import validate_home

    if args.name is not None and not paths.task_dir(args.name).is_dir():
        # An unknown name is a failed command (one line on stderr), not a validation report.
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks}")
    problems, report = validate_home(paths, only=args.name)
    for line in report:
        print(line)
    return 1 if problems else 0


def cmd_new(args: argparse.Namespace, paths: Paths) -> int:
    from .scaffold import create_task

    folder = create_task(paths, args.name)
    print(f"created {folder}; edit main.py and config.ini, then the running supervisor picks it up")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Paths], int]] = {
    "run": cmd_run, "stop": cmd_stop, "status": cmd_status, "history": cmd_history, "run-now": cmd_run_now,
    "logs": cmd_logs, "validate": cmd_validate, "new": cmd_new,
}


def _short(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
