"""Command line: ``python3 -m supervisor COMMAND`` / ``taskautomation COMMAND`` (docs/cli.md), and the
single-command entry points ``main.py`` (run) and ``terminate.py`` (stop).

Exit codes: 0 success; 1 the command failed (no home, no supervisor running for stop/run-now, a task refused
a run, a waited-for run did not end ``ok``, validation found errors, a runtime error); 2 bad usage. Errors
are one line on stderr, never a traceback. Human output is rendered by render.py from the same documents
that ``--json`` prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import NotRunningError, TaskAutomationError
from ..model import Outcome, ShownState
from ..paths import Paths
from .args import build_parser, build_single_parser
from .completion import cmd_completion, complete_if_asked
from .edges import call_edge
from .home import choose_home, ensure_home
from .init import cmd_init
from .metrics import cmd_metrics
from .next import cmd_next
from .render import View, format_full_time, outcome_line, render_history, render_status, wants_colour

TERMINATE_TIMEOUT_S = 600.0
CREATES_HOME = ("run", "new", "worker", "import-crontab")  # the commands that may create a missing home (saying so)


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "taskautomation",
    default_home: Path | None = None,
    command: str | None = None,
) -> int:
    """Run one command. ``command`` set: the single-command form (main.py, terminate.py), whose home
    defaults to ``default_home`` (the script's folder) instead of the current folder."""
    if command is not None:
        args = build_single_parser(prog, command).parse_args(argv)
        args.command = command
    else:
        parser = build_parser(prog)
        complete_if_asked(parser)  # a shell computing a completion: answered there, the process exits
        args = parser.parse_args(argv)
    if args.command == "run-now" and args.timeout is not None and not args.wait:
        print(f"{prog}: --timeout needs --wait", file=sys.stderr)
        return 2
    try:
        if args.command in HOMELESS:
            return HOMELESS[args.command](args)
        handler: Callable[[argparse.Namespace, Paths], int] = COMMANDS[args.command]
        choice = choose_home(getattr(args, "home", None), environ=os.environ, cwd=Path.cwd(), default=default_home)
        # A plan (import-crontab --dry-run) writes nothing, not even a missing home.
        planning = args.command == "import-crontab" and args.dry_run and not choice.path.exists()
        created = None if planning else ensure_home(choice, may_create=args.command in CREATES_HOME)
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
        print(
            f"{prog}: missing dependency {exc.name!r} for {sys.executable}; install the package first "
            f"(python3 -m venv .venv && .venv/bin/pip install -e .) and use .venv/bin/python",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


def _view(args: argparse.Namespace) -> View:
    """How to render for this terminal (or pipe): width, colour, zone."""
    return View(
        now=datetime.now(timezone.utc),
        utc=bool(getattr(args, "utc", False)),
        width=shutil.get_terminal_size((80, 24)).columns,
        colour=wants_colour(sys.stdout, os.environ),
    )


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


# ---------------------------------------------------------------------------------------------------- run/stop
def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    from ..service import serve

    return serve(paths)


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    from ..system.control import terminate

    start = time.monotonic()
    pid = terminate(paths, timeout=TERMINATE_TIMEOUT_S, on_progress=lambda line: print(line, file=sys.stderr))
    print(f"supervisor (pid {pid}) on {paths.home} stopped in {time.monotonic() - start:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------------- status
def _live(paths: Paths, command: str, args: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Ask the running supervisor; None when none is running (a busy one raises ControlError)."""
    from ..system.control import ask_supervisor

    try:
        return ask_supervisor(paths, command, args)
    except NotRunningError:
        return None


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    from ..query.source import StatusSource

    reading = StatusSource(paths).read()
    if reading.note:
        print(f"warning: {reading.note}", file=sys.stderr)
    status = reading.document
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_lines(render_status(status, _view(args), home=str(paths.home), why_all=args.why))
    return _status_check_exit(status) if args.check else 0


def unhealthy_tasks(status: dict[str, Any]) -> list[str]:
    """`status --check`: one line per task in error or env-failed, or whose last finished run failed.

    "Failed" is the failure streak's definition (``spec.FAILURE_OUTCOMES``: failed, timeout, memory, crashed,
    env-failed); ``killed`` by a stop or ``interrupted`` by a crash of the supervisor say nothing about the
    task. A disabled task is not checked.
    """
    from ..model import FAILURE_OUTCOMES

    failing = {outcome.value for outcome in FAILURE_OUTCOMES}
    problems = []
    for task in status.get("tasks", []):
        last = task.get("last_run") or {}
        if task.get("state") in (ShownState.ERROR, ShownState.ENV_FAILED):
            problems.append(f"{task['name']}: {task['state']}")
        elif task.get("enabled", True) and last.get("outcome") in failing:
            problems.append(f"{task['name']}: last run {last['outcome']}")
    return problems


def _status_check_exit(status: dict[str, Any]) -> int:
    problems = unhealthy_tasks(status)
    for line in problems:
        print(f"check failed: {line}", file=sys.stderr)
    return 1 if problems else 0


def cmd_history(args: argparse.Namespace, paths: Paths) -> int:
    from ..history.store import HistoryStore
    from ..query.status import history_json

    outcomes = [o for group in args.outcome or [] for o in group]
    records = HistoryStore(paths.database, readonly=True)
    try:
        runs = records.history(args.name, limit=max(1, args.limit), outcomes=outcomes, since=args.since)
        known = bool(runs) or bool(records.history(args.name, limit=1))
    finally:
        records.close()
    if not known and not paths.task_dir(args.name).is_dir():
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks} and no history for it")
    document = history_json(runs)
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    _print_lines(render_history(document["runs"], _view(args)))
    return 0


def cmd_run_now(args: argparse.Namespace, paths: Paths) -> int:
    from ..system.control import lock_is_held
    from .follow import LogFollower
    from .runwait import Waiting, wait_for_run

    follower = LogFollower(paths.task_log(args.name))
    try:
        if args.wait:
            follower.read_lines()  # from the log's current end: every line of the run comes after this
        request: dict[str, Any] = {"name": args.name}
        if args.respect_gates:
            request["respect_gates"] = True
        if args.env:
            request["env"] = dict(args.env)  # checked by the parser; the supervisor checks them again
        reply = _live(paths, "run-now", request)
        if reply is None:
            raise NotRunningError(f"no supervisor is running on {paths.home}; start it with: taskautomation run")
        if not reply.get("ok"):
            raise TaskAutomationError(str(reply.get("error")))
        run_id = str(reply["run_id"])
        if reply.get("waiting_for"):  # a task still loading: its run starts once it is loaded
            then = f"it starts once the task is loaded (now {reply['waiting_for']})"
            print(f"accepted run {run_id} of {args.name!r}: {then}", flush=True)
        else:
            print(f"started run {run_id} of {args.name!r}", flush=True)
        if not args.wait:
            return 0
        waiting = Waiting(
            run_id=run_id,
            task=args.name,
            database=paths.database,
            monotonic=time.monotonic,
            pause=time.sleep,
            emit=lambda line: print(line, flush=True),
            supervisor_alive=lambda: lock_is_held(paths.lock_file),
        )
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
    lines = data.splitlines()[-args.limit :] if args.limit > 0 else []
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
    from ..system.control import lock_is_held
    from .scaffold import create_task, name_warning

    folder = create_task(paths, args.name, enable=args.enable)  # an invalid folder name fails first
    warning = name_warning(args.name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"created {folder}: edit main.py, config.ini and requirements.txt")
    running = lock_is_held(paths.lock_file)
    if args.enable:
        print(
            "the running supervisor picks it up now and runs it at once (it never ran)"
            if running
            else f"no supervisor is running on {paths.home}: it runs once you start one (taskautomation run)"
        )
    else:
        print(
            f"it is disabled (Enabled = False in {folder / 'config.ini'}): set Enabled = True when main() "
            f"is ready; "
            + (
                "the running supervisor picks that change up"
                if running
                else f"no supervisor is running on {paths.home} yet"
            )
        )
    return 0


# ---------------------------------------------------------------------------------------------------- worker
def cmd_worker(args: argparse.Namespace, paths: Paths) -> int:
    from ..system.worker_unit import REDIS_URL_VAR

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    redis_url = args.redis or os.environ.get(REDIS_URL_VAR)
    if not redis_url:
        raise TaskAutomationError(f"worker: give the Redis URL with --redis URL (or {REDIS_URL_VAR})")
    return call_edge(
        "worker.serve",
        paths,
        redis_url=redis_url,
        queues=queues or ["default"],
        burst=args.burst,
        name=args.name,
        max_backoff_s=args.max_backoff,
    )


# ---------------------------------------------------------------------------------------------------- operations
def cmd_install_systemd(args: argparse.Namespace, paths: Paths) -> int:
    from ..system.systemd import InstallOptions, install_command

    options = InstallOptions(user_mode=args.user, dry_run=args.dry_run, enable=args.enable, target_dir=args.unit_dir)
    if args.worker:
        from ..system.worker_unit import install_worker_command

        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        return install_worker_command(
            paths, options, redis_url=args.redis, queues=queues, worker_name=args.name, environ=os.environ, out=print
        )
    if args.redis or args.name or args.queues != "default":
        raise TaskAutomationError("install-systemd: --redis, --queues and --name belong with --worker")
    return install_command(paths, options, environ=os.environ, out=print)


def cmd_doctor(args: argparse.Namespace, paths: Paths) -> int:
    from .doctor import doctor_command

    return doctor_command(paths, as_json=args.json, out=print)


# ---------------------------------------------------------------------------------------------------- notify-test
def cmd_notify_test(args: argparse.Namespace, paths: Paths) -> int:
    """One line per channel of the task ([Notify] Urls, Command, PingUrl) with its result; 1 if any failed."""
    from ..config.schema import read_home_config, read_task_config
    from ..execution.secrets import load_secrets
    from ..notify.notifier import Notifier, default_origin

    config = paths.task_config(args.name)
    if not config.is_file():
        raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks} (or it has no config.ini)")
    home_config, _ = read_home_config(paths.home_config)
    spec = read_task_config(
        config, task=args.name, defaults=home_config.limits, notify_defaults=home_config.notify
    ).spec
    if not spec.notify.any_channel:
        raise TaskAutomationError(
            f"task {args.name!r}: no channel to test: set [Notify] Urls, PingUrl or Command "
            f"in {config} or {paths.home_config}"
        )
    secrets = load_secrets(paths.home_secrets, paths.task_secrets(args.name), task=args.name)
    notifier = Notifier(origin=default_origin(paths.home), logger=logging.getLogger("taskautomation.notify-test"))
    checks = notifier.test(args.name, settings=spec.notify, secrets=secrets)
    for check in checks:
        print(f"{'ok    ' if check.result.ok else 'FAILED'}  {check.channel}: {check.result.detail}")
    return 0 if all(check.result.ok for check in checks) else 1


# ---------------------------------------------------------------------------------------------------- import-crontab
def cmd_import_crontab(args: argparse.Namespace, paths: Paths) -> int:
    from .cronimport import import_crontab

    return import_crontab(args, paths)


# ---------------------------------------------------------------------------------------------------- web
def cmd_web(args: argparse.Namespace, paths: Paths) -> int:
    """Serve the dashboard in the foreground; prints the login URL once it listens."""
    if args.url:
        return call_edge("web.print_url", paths, listen_text=args.listen)
    return call_edge("web.serve", paths, listen_text=args.listen, parent_fd=args.parent_fd)


def cmd_pause_resume(args: argparse.Namespace, paths: Paths) -> int:
    """pause/resume NAME: through the running supervisor, else written to the history for the next start."""
    reply = _live(paths, args.command, {"name": args.name, "by": "cli"})
    if reply is None:
        from ..core.pausing import PauseBook
        from ..history.store import HistoryStore

        if not paths.task_dir(args.name).is_dir():
            raise TaskAutomationError(f"no task named {args.name!r} in {paths.tasks}")
        with HistoryStore(paths.database) as records:
            reply = PauseBook(records, now=lambda: datetime.now(timezone.utc)).handle(
                args.command, {"name": args.name, "by": "cli"}, known=lambda _: True
            )
    if not reply.get("ok"):
        raise TaskAutomationError(str(reply.get("error")))
    if reply["paused"]:
        since = format_full_time(reply["since"], View(now=datetime.now(timezone.utc)))
        print(f"{args.name!r} paused since {since}: its due runs do not start")
    else:
        print(f"{args.name!r} resumed" if reply.get("changed", True) else f"{args.name!r} was not paused")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Paths], int]] = {
    "run": cmd_run,
    "stop": cmd_stop,
    "status": cmd_status,
    "history": cmd_history,
    "run-now": cmd_run_now,
    "logs": cmd_logs,
    "validate": cmd_validate,
    "new": cmd_new,
    "worker": cmd_worker,
    "install-systemd": cmd_install_systemd,
    "doctor": cmd_doctor,
    "notify-test": cmd_notify_test,
    "next": cmd_next,
    "web": cmd_web,
    "pause": cmd_pause_resume,
    "resume": cmd_pause_resume,
    "metrics": cmd_metrics,
    "import-crontab": cmd_import_crontab,
}
# The commands that choose their folder themselves (init) or need none (completion).
HOMELESS: dict[str, Callable[[argparse.Namespace], int]] = {"init": cmd_init, "completion": cmd_completion}
