"""Command line: ``python3 -m supervisor COMMAND`` / ``taskautomation COMMAND`` (DESIGN.md 1.4), and the
single-command entry points ``main.py`` (run) and ``terminate.py`` (stop).

Exit codes: 0 success; 1 the command failed (no home, no supervisor running for stop/run-now, a task refused
a run, a waited-for run did not end ``ok``, validation found errors, a runtime error); 2 bad usage. Errors
are one line on stderr, never a traceback. Human output is rendered by render.py from the same documents
that ``--json`` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import NotRunningError, TaskAutomationError
from .home import choose_home, ensure_home
from .paths import Paths
from .render import View, outcome_line, render_history, render_status, wants_colour
from .spec import Outcome

TERMINATE_TIMEOUT_S = 600.0
CREATES_HOME = ("run", "new")  # the commands that may create a missing home (saying so)
VERSION = f"taskautomation {__version__}"
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhd])$")

# One example per command, shown at the end of its --help.
EXAMPLES = {
    "run": "example:\n  python3 -m supervisor run --home /srv/ta",
    "stop": "example:\n  python3 -m supervisor stop --home /srv/ta",
    "status": "examples:\n  python3 -m supervisor status --why --utc\n  python3 -m supervisor status --json",
    "history": "example:\n  python3 -m supervisor history backup --outcome failed --since 2026-11-01 -n 5",
    "run-now": "example:\n  python3 -m supervisor run-now backup --wait --timeout 600",
    "logs": "example:\n  python3 -m supervisor logs backup -n 100 -f",
    "validate": "example:\n  python3 -m supervisor validate backup",
    "new": "example:\n  python3 -m supervisor new fetch_weather --enable",
}
HOME_HELP = ("the folder holding Tasks/, envs/, logs/ (default: $TASKAUTOMATION_HOME, else the current folder "
             "if it holds Tasks/)")


def _outcome_list(text: str) -> list[Outcome]:
    """``failed`` or ``failed,timeout``: argparse type for --outcome."""
    try:
        return [Outcome(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: outcomes are {', '.join(o.value for o in Outcome)}") from None


def parse_since(text: str, *, now: datetime) -> datetime:
    """``2026-11-01`` (local midnight), ``2026-11-01T08:00`` (local unless it has an offset), or ``90m``,
    ``12h``, ``7d`` ago. Returns an aware datetime."""
    ago = _AGO.match(text.strip())
    if ago:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[ago.group(2)]
        return now - timedelta(**{unit: float(ago.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a date (2026-11-01), a date and time (2026-11-01T08:00, local unless it has an "
            f"offset) or an age (90m, 12h, 7d)") from None
    return moment if moment.tzinfo is not None else moment.astimezone()  # naive = the machine's local time


def _since(text: str) -> datetime:
    return parse_since(text, now=datetime.now(timezone.utc))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


# ------------------------------------------------------------------------------------------------ parsers
def _add_options(command: str, p: argparse.ArgumentParser) -> None:
    """The options of one command (shared by the COMMAND form and the main.py/terminate.py form)."""
    if command == "status":
        p.add_argument("--json", action="store_true", help="print the status document (stable schema)")
        p.add_argument("--utc", action="store_true", help="show times in UTC instead of the local zone")
        p.add_argument("--why", action="store_true",
                       help="explain every task's state and next run in full (default: only tasks that are "
                            "not plainly scheduled)")
    elif command == "history":
        p.add_argument("name", help="the task (its folder name under Tasks/)")
        p.add_argument("--json", action="store_true", help='print {"runs": [...]} (stable schema)')
        p.add_argument("-n", "--limit", type=int, default=20, metavar="N",
                       help="show the newest N runs that match (default 20)")
        p.add_argument("--outcome", type=_outcome_list, action="append", metavar="OUTCOME[,OUTCOME]",
                       help="only runs with these outcomes (repeatable), e.g. failed,timeout")
        p.add_argument("--since", type=_since, metavar="WHEN",
                       help="only runs started at or after WHEN: 2026-11-01, 2026-11-01T08:00 (local unless "
                            "it has an offset), or an age such as 90m, 12h, 7d")
        p.add_argument("--utc", action="store_true", help="show times in UTC instead of the local zone")
    elif command == "run-now":
        p.add_argument("name", help="the task to run")
        p.add_argument("--wait", action="store_true",
                       help="print the run's log lines until it ends; exit 0 if it ended ok, else 1")
        p.add_argument("--timeout", type=_positive, metavar="S",
                       help="with --wait: give up waiting after S seconds (exit 1; the run goes on)")
    elif command == "logs":
        p.add_argument("name", help="the task whose log to print")
        p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
        p.add_argument("-n", "--limit", "--lines", dest="limit", type=int, default=50, metavar="N",
                       help="print the last N lines first (default 50; 0 for none)")
    elif command == "validate":
        p.add_argument("name", nargs="?", help="check only this task (default: every task and the home config)")
    elif command == "new":
        p.add_argument("name", help="the new task's folder name (a Python identifier, e.g. fetch_weather)")
        p.add_argument("--enable", action="store_true",
                       help="create it enabled (default: Enabled = False until you say it is ready)")


SUBCOMMANDS = {
    "run": "run the supervisor in the foreground",
    "stop": "stop the running supervisor and wait until it is gone",
    "status": "every task: state, next run, last run, errors, why",
    "history": "the runs of one task, newest first, optionally filtered",
    "run-now": "start a run of a task now (and with --wait, follow it to its end)",
    "logs": "print (and follow) a task's log",
    "validate": "check task folders and requirements without running anything",
    "new": "create a new task folder from a template (disabled until you enable it)",
}


def _parser(prog: str) -> argparse.ArgumentParser:
    # --home is accepted before and after the subcommand: the sub-parsers' copy must not overwrite a value
    # given before the subcommand, hence SUPPRESS there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR", help=HOME_HELP)
    parser = argparse.ArgumentParser(
        prog=prog, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run Python task folders on schedule, each in its own virtualenv, as contained child "
                    "processes.",
        epilog="examples:\n  taskautomation status\n  taskautomation run-now backup --wait\n"
               "  taskautomation COMMAND --help")
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command, summary in SUBCOMMANDS.items():
        p = sub.add_parser(command, parents=[common], help=summary, description=summary[0].upper() + summary[1:],
                           epilog=EXAMPLES[command], formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_options(command, p)
    return parser


def _single_parser(prog: str, command: str) -> argparse.ArgumentParser:
    """The parser of main.py (``run``) and terminate.py (``stop``): that command's options only."""
    script_examples = {"run": f"example:\n  python3 {prog} --home /srv/ta",
                       "stop": f"example:\n  python3 {prog} --home /srv/ta"}
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{SUBCOMMANDS[command][0].upper()}{SUBCOMMANDS[command][1:]} (the same as "
                    f"`python3 -m supervisor {command}`).",
        epilog=script_examples.get(command, EXAMPLES[command]))
    parser.add_argument("--home", metavar="DIR",
                        help="the folder holding Tasks/, envs/, logs/ (default: $TASKAUTOMATION_HOME, else "
                             "the folder of this script)")
    parser.add_argument("--version", action="version", version=VERSION)
    _add_options(command, parser)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "taskautomation",
         default_home: Path | None = None, command: str | None = None) -> int:
    """Run one command. ``command`` set: the single-command form (main.py, terminate.py), whose home
    defaults to ``default_home`` (the script's folder) instead of the current folder."""
    if command is not None:
        args = _single_parser(prog, command).parse_args(argv)
        args.command = command
    else:
        args = _parser(prog).parse_args(argv)
    if args.command == "run-now" and args.timeout is not None and not args.wait:
        print(f"{prog}: --timeout needs --wait", file=sys.stderr)
        return 2
    handler: Callable[[argparse.Namespace, Paths], int] = COMMANDS[args.command]
    try:
        choice = choose_home(getattr(args, "home", None), environ=os.environ, cwd=Path.cwd(),
                             default=default_home)
        created = ensure_home(choice, may_create=args.command in CREATES_HOME)
        if created:
            print(f"{prog}: {created}", file=sys.stderr)
        return handler(args, Paths(choice.path))
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


def _view(args: argparse.Namespace) -> View:
    """How to render for this terminal (or pipe): width, colour, zone."""
    return View(now=datetime.now(timezone.utc), utc=bool(getattr(args, "utc", False)),
                width=shutil.get_terminal_size((80, 24)).columns, colour=wants_colour(sys.stdout, os.environ))


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


# ---------------------------------------------------------------------------------------------------- run/stop
def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    from .service import serve

    return serve(paths)


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    from .control import terminate

    start = time.monotonic()
    pid = terminate(paths.lock_file, paths.control_socket, timeout=TERMINATE_TIMEOUT_S,
                    on_progress=lambda line: print(line, file=sys.stderr))
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
    from .loop import _last_run_json
    from .records import Records

    home_config, _ = read_home_config(paths.home_config)
    records = Records(paths.database, readonly=True)
    try:
        rows = []
        for name, folder in sorted(scan_tasks(paths.tasks).items(), key=lambda kv: kv[0].casefold()):
            enabled, error = True, None
            try:
                spec = read_task_config(folder.path / "config.ini", task=name,
                                        defaults=home_config.limits).spec
                enabled = spec.enabled
            except TaskAutomationError as exc:
                error = str(exc)
            rows.append({"name": name, "enabled": enabled,
                         "state": "error" if error else ("stopped" if enabled else "disabled"),
                         "next_run": None, "last_run": _last_run_json(records.last_finished(name)),
                         "error": error, "running": None,
                         "why": "the supervisor is not running" if not error else "not loadable (see error)"})
        return {"tasks": rows, "supervisor": None}
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
    _print_lines(render_status(status, _view(args), home=str(paths.home), why_all=args.why))
    return 0


def cmd_history(args: argparse.Namespace, paths: Paths) -> int:
    from .records import Records, record_to_json

    outcomes = [o for group in args.outcome or [] for o in group]
    records = Records(paths.database, readonly=True)
    try:
        runs = records.history(args.name, limit=max(1, args.limit), outcomes=outcomes, since=args.since)
        known = bool(runs) or bool(records.history(args.name, limit=1))
    finally:
        records.close()
    if not known and not paths.task_dir(args.name).is_dir():
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks} and no history for it")
    document = {"runs": [record_to_json(r) for r in runs]}
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    _print_lines(render_history(document["runs"], _view(args)))
    return 0


def cmd_run_now(args: argparse.Namespace, paths: Paths) -> int:
    from .control import lock_is_held
    from .follow import LogFollower
    from .runwait import Waiting, wait_for_run

    follower = LogFollower(paths.task_log(args.name))
    try:
        if args.wait:
            follower.read_lines()  # from the log's current end: every line of the run comes after this
        reply = _live(paths, "run-now", {"name": args.name})
        if reply is None:
            raise NotRunningError(f"no supervisor is running on {paths.home}; start it with main.py")
        if not reply.get("ok"):
            raise TaskAutomationError(str(reply.get("error")))
        run_id = str(reply["run_id"])
        print(f"started run {run_id} of {args.name!r}", flush=True)
        if not args.wait:
            return 0
        waiting = Waiting(run_id=run_id, task=args.name, database=paths.database, monotonic=time.monotonic,
                          pause=time.sleep, emit=lambda line: print(line, flush=True),
                          supervisor_alive=lambda: lock_is_held(paths.lock_file))
        run = wait_for_run(waiting, follower, timeout=args.timeout)
    finally:
        follower.close()
    print(outcome_line(run, _view(args)))
    return 0 if run["outcome"] == Outcome.OK.value else 1


def cmd_logs(args: argparse.Namespace, paths: Paths) -> int:
    """Print the last lines of a task's log; with -f keep printing, across rotations, until Ctrl-C."""
    from .follow import LogFollower

    log = paths.task_log(args.name)
    if not log.exists():
        if not paths.task_dir(args.name).is_dir():
            raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks}")
        raise TaskAutomationError(f"{log} does not exist yet (the task has not been loaded)")
    with open(log, "rb") as f:
        data = f.read()
    lines = data.splitlines()[-args.limit:] if args.limit > 0 else []
    for line in lines:
        sys.stdout.write(line.decode("utf-8", "replace") + "\n")
    sys.stdout.flush()
    if not args.follow:
        return 0
    with LogFollower(log, start=len(data)) as follower:
        while True:
            for text in follower.read_lines():
                sys.stdout.write(text + "\n")
            sys.stdout.flush()
            time.sleep(0.25)  # a log follower polls, like tail -f; nothing here waits on the supervisor


# ---------------------------------------------------------------------------------------------------- validate
def cmd_validate(args: argparse.Namespace, paths: Paths) -> int:
    from .validate import validate_home

    if args.name is not None and not paths.task_dir(args.name).is_dir():
        # An unknown name is a failed command (one line on stderr), not a validation report.
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks}")
    problems, report = validate_home(paths, only=args.name)
    _print_lines(report)
    return 1 if problems else 0


def cmd_new(args: argparse.Namespace, paths: Paths) -> int:
    from .control import lock_is_held
    from .scaffold import create_task, name_warning

    folder = create_task(paths, args.name, enable=args.enable)  # an invalid folder name fails first
    warning = name_warning(args.name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"created {folder}: edit main.py, config.ini and requirements.txt")
    running = lock_is_held(paths.lock_file)
    if args.enable:
        print("the running supervisor picks it up now and runs it at once (it never ran)" if running
              else f"no supervisor is running on {paths.home}: it runs once you start one (python3 main.py)")
    else:
        print(f"it is disabled (Enabled = False in {folder / 'config.ini'}): set Enabled = True when main() "
              f"is ready; " + ("the running supervisor picks that change up" if running
                               else f"no supervisor is running on {paths.home} yet"))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Paths], int]] = {
    "run": cmd_run, "stop": cmd_stop, "status": cmd_status, "history": cmd_history, "run-now": cmd_run_now,
    "logs": cmd_logs, "validate": cmd_validate, "new": cmd_new,
}
