"""The command line's grammar: every command's options, their help texts and one example per command.

Shared by ``taskautomation COMMAND`` and the single-command scripts ``main.py`` (``run``) and
``terminate.py`` (``stop``), which take that command's options without the command word. Value parsers
(``--outcome``, ``--since``, ``--timeout``) turn bad input into a usage error (exit 2) naming the value.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..execution.params import ParamError, collect, parse_assignment
from ..model import Outcome

VERSION = f"taskautomation {__version__}"
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhd])$")

# One example per command, shown at the end of its --help.
EXAMPLES = {
    "run": "example:\n  taskautomation run --home /srv/ta",
    "stop": "example:\n  taskautomation stop --home /srv/ta",
    "status": "examples:\n  taskautomation status --why --utc\n  taskautomation status --json",
    "history": "example:\n  taskautomation history backup --outcome failed --since 2026-11-01 -n 5",
    "run-now": "example:\n  taskautomation run-now backup --wait --timeout 600",
    "logs": "example:\n  taskautomation logs backup -n 100 -f",
    "validate": "example:\n  taskautomation validate backup",
    "new": "example:\n  taskautomation new fetch_weather --enable",
    "worker": "example:\n  taskautomation worker --redis redis://:PASSWORD@10.0.0.5:6379/0 --home ~/ta-worker "
    "--queues default,gpu",
    "install-systemd": "examples:\n  taskautomation install-systemd --user --enable\n"
    "  sudo taskautomation install-systemd --dry-run",
    "doctor": "example:\n  taskautomation doctor --json",
    "notify-test": "example:\n  taskautomation notify-test backup",
    "next": "examples:\n  taskautomation next backup --count 10\n"
    "  taskautomation next backup --from 2026-03-28T12:00 --json",
    "pause": "example:\n  taskautomation pause backup",
    "resume": "example:\n  taskautomation resume backup",
    "metrics": "examples:\n  taskautomation metrics\n"
    "  taskautomation metrics --textfile /var/lib/prometheus/node-exporter/taskautomation.prom",
    "web": "examples:\n  taskautomation web\n  taskautomation web --url\n"
    "  (from another machine: ssh -L 8765:127.0.0.1:8765 HOST, then open the printed URL)",
    "import-crontab": "examples:\n  taskautomation import-crontab --dry-run\n"
    "  taskautomation import-crontab --home ~/ta --enable\n"
    "  sudo taskautomation import-crontab --system /etc/cron.d/backup --home /srv/ta",
    "init": "example:\n  taskautomation init ~/ta",
    "completion": "examples:\n  taskautomation completion bash > "
    "~/.local/share/bash-completion/completions/taskautomation\n"
    "  taskautomation completion fish > ~/.config/fish/completions/taskautomation.fish",
}
HOME_HELP = (
    "the folder holding Tasks/, envs/, logs/ (default: $TASKAUTOMATION_HOME, else the current folder "
    "if it holds Tasks/)"
)


def _outcome_list(text: str) -> list[Outcome]:
    """``failed`` or ``failed,timeout``: argparse type for --outcome."""
    try:
        return [Outcome(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: outcomes are {', '.join(o.value for o in Outcome)}") from None


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
            f"offset) or an age (90m, 12h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()  # naive = the machine's local time


def _since(text: str) -> datetime:
    return parse_since(text, now=datetime.now(timezone.utc))


class _EnvAction(argparse.Action):
    """``--env KEY=VALUE``, repeatable: each one checked as it comes (execution/params.py), so a bad one is a
    usage error (exit 2) naming it."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, _: Any = None
    ) -> None:
        pairs = list(getattr(namespace, self.dest, None) or [])
        try:
            pairs.append(parse_assignment(str(values)))
            collect(pairs)
        except ParamError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        setattr(namespace, self.dest, pairs)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


# ------------------------------------------------------------------------------------------------ parsers
def add_options(command: str, p: argparse.ArgumentParser) -> None:
    """The options of one command (shared by the COMMAND form and the main.py/terminate.py form)."""
    if command in ("pause", "resume"):
        p.add_argument("name", help=f"the task to {command}")
    elif command in _OPTIONS:
        _OPTIONS[command](p)


def _status_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the status document (stable schema)")
    p.add_argument("--utc", action="store_true", help="show times in UTC instead of the local zone")
    p.add_argument(
        "--why",
        action="store_true",
        help="explain every task's state and next run in full (default: only tasks that are not plainly scheduled)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when any task is in error or env-failed or its last finished run failed "
        "(for scripts and monitors)",
    )


def _history_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the task (its folder name under Tasks/)")
    p.add_argument("--json", action="store_true", help='print {"runs": [...]} (stable schema)')
    p.add_argument(
        "-n", "--limit", type=int, default=20, metavar="N", help="show the newest N runs that match (default 20)"
    )
    p.add_argument(
        "--outcome",
        type=_outcome_list,
        action="append",
        metavar="OUTCOME[,OUTCOME]",
        help="only runs with these outcomes (repeatable), e.g. failed,timeout",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only runs started at or after WHEN: 2026-11-01, 2026-11-01T08:00 (local unless "
        "it has an offset), or an age such as 90m, 12h, 7d",
    )
    p.add_argument("--utc", action="store_true", help="show times in UTC instead of the local zone")


def _run_now_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the task to run")
    p.add_argument(
        "--wait", action="store_true", help="print the run's log lines until it ends; exit 0 if it ended ok, else 1"
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        metavar="S",
        help="with --wait: give up waiting after S seconds (exit 1; the run goes on)",
    )
    p.add_argument(
        "--respect-gates",
        action="store_true",
        help="refuse the run while a start gate ([Limits] StartIfFreeMemoryMB, StartIfLoadBelow) is closed",
    )
    p.add_argument(
        "--env",
        action=_EnvAction,
        default=[],
        metavar="KEY=VALUE",
        help="a variable for this run's environment only (repeatable); shown in its history row, masked when "
        "KEY is in the task's .env or looks like a secret",
    )


def _logs_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the task whose log to print")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    p.add_argument(
        "-n",
        "--limit",
        "--lines",
        dest="limit",
        type=int,
        default=50,
        metavar="N",
        help="print the last N lines first (default 50; 0 for none)",
    )


def _validate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="check only this task (default: every task and the home config)")


def _new_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the new task's folder name (a Python identifier, e.g. fetch_weather)")
    p.add_argument(
        "--enable",
        action="store_true",
        help="create it enabled (default: Enabled = False until you say it is ready)",
    )


def _worker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis the supervisor enqueues on (its [Supervisor] RedisUrl; default: $TASKAUTOMATION_REDIS_URL)",
    )
    p.add_argument(
        "--queues",
        default="default",
        metavar="A,B",
        help="comma-separated queues to serve, in priority order (default: default)",
    )
    p.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    p.add_argument("--name", help="the worker's name in Redis (default: a random one)")
    p.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait between two tries while Redis is unreachable (default: 30)",
    )


def _install_systemd_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--user",
        action="store_true",
        help="a user unit (~/.config/systemd/user) instead of a system unit (/etc/systemd/system)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    p.add_argument("--enable", action="store_true", help="also run systemctl daemon-reload and enable --now")
    p.add_argument("--unit-dir", type=Path, default=None, metavar="DIR", help="write the unit into DIR instead")
    worker = p.add_argument_group("a worker's unit (this home is an RQ worker's home)")
    worker.add_argument(
        "--worker", action="store_true", help="a unit for `taskautomation worker` (Restart=always) instead"
    )
    worker.add_argument("--redis", metavar="URL", help="with --worker: the Redis URL (kept in HOME/worker.env, 0600)")
    worker.add_argument("--queues", default="default", metavar="A,B", help="with --worker: the queues to serve")
    worker.add_argument("--name", help="with --worker: the worker's name in Redis (default: a random one per start)")


def _doctor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help='print {"checks": [...]} (stable schema)')


def _notify_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the task whose [Notify] channels to test")


def _next_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the task (its folder name under Tasks/)")
    p.add_argument("--count", type=int, default=5, metavar="N", help="how many due times (default 5)")
    p.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="compute as if now were TIME, with no history (ISO 8601, e.g. 2026-03-28T12:00; "
        "without an offset TIME is read in the task's zone)",
    )
    p.add_argument("--json", action="store_true", help='print {"task": NAME, "next": [ISO, ...]} (stable schema)')


def _web_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="address to serve on (default: [Web] Listen in taskautomation.ini, else 127.0.0.1:8765)",
    )
    p.add_argument(
        "--url",
        action="store_true",
        help="print the login URL and exit (e.g. for the dashboard the supervisor runs because of [Web] Listen)",
    )
    p.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor


def _import_crontab_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="the crontab to import, - for standard input (default: the output of `crontab -l`; "
        "with --system: /etc/crontab)",
    )
    p.add_argument(
        "--system",
        action="store_true",
        help="FILE is a system crontab (/etc/crontab, /etc/cron.d/*): a user name before each command",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan as a table, write nothing")
    p.add_argument(
        "--enable",
        action="store_true",
        help="create the tasks enabled (default: Enabled = False until you have commented the lines out in cron)",
    )


def _init_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help="the folder to make a home (default: --home, $TASKAUTOMATION_HOME, else the current folder)",
    )


def _completion_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to print the completion script for")


def _metrics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--textfile",
        type=Path,
        default=None,
        metavar="PATH",
        help="write to PATH (a *.prom file in node_exporter's --collector.textfile.directory) by an atomic "
        "rename instead of printing",
    )


_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "status": _status_options,
    "history": _history_options,
    "run-now": _run_now_options,
    "logs": _logs_options,
    "validate": _validate_options,
    "new": _new_options,
    "worker": _worker_options,
    "install-systemd": _install_systemd_options,
    "doctor": _doctor_options,
    "notify-test": _notify_test_options,
    "next": _next_options,
    "web": _web_options,
    "metrics": _metrics_options,
    "import-crontab": _import_crontab_options,
    "init": _init_options,
    "completion": _completion_options,
}

SUBCOMMANDS = {
    "run": "run the supervisor in the foreground",
    "stop": "stop the running supervisor and wait until it is gone",
    "status": "every task: state, next run, last run, errors, why",
    "history": "the runs of one task, newest first, optionally filtered",
    "run-now": "start a run of a task now (and with --wait, follow it to its end)",
    "logs": "print (and follow) a task's log",
    "validate": "check task folders and requirements without running anything",
    "new": "create a new task folder from a template (disabled until you enable it)",
    "worker": "run tasks for a supervisor on another machine, as an RQ worker (extra: taskautomation[rq])",
    "install-systemd": "write a systemd unit for this home (starts at boot, restarts after a crash or hang)",
    "doctor": "check that this machine and home are set up right; exit 1 on any FAIL",
    "notify-test": "send a test notice through every channel of a task; exit 1 if any failed",
    "next": "the next due times of a task, with its zone, window and jitter (offline)",
    "pause": "stop starting the due runs of a task (kept across restarts) until resume",
    "resume": "let a paused task's due runs start again",
    "web": "serve the web dashboard and print its login URL (needs taskautomation[web])",
    "metrics": "print the Prometheus metrics of this home (or write them for node_exporter's textfile collector)",
    "import-crontab": "make one task folder per job of a crontab (created disabled; the crontab is not changed)",
    "init": "make a folder a home: Tasks/ with a disabled example, a commented taskautomation.ini",
    "completion": "print the shell completion script for bash, zsh or fish",
}


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The parser of ``python3 -m supervisor`` / ``taskautomation``: one subcommand per entry of SUBCOMMANDS."""
    # --home is accepted before and after the subcommand: the sub-parsers' copy must not overwrite a value
    # given before the subcommand, hence SUPPRESS there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR", help=HOME_HELP)
    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run Python task folders on schedule, each in its own virtualenv, as contained child processes.",
        epilog="examples:\n  taskautomation status\n  taskautomation run-now backup --wait\n"
        "  taskautomation COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command, summary in SUBCOMMANDS.items():
        p = sub.add_parser(
            command,
            parents=[common],
            help=summary,
            description=summary[0].upper() + summary[1:],
            epilog=EXAMPLES[command],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_options(command, p)
    return parser


def build_single_parser(prog: str, command: str) -> argparse.ArgumentParser:
    """The parser of main.py (``run``) and terminate.py (``stop``): that command's options only."""
    script_examples = {
        "run": f"example:\n  python3 {prog} --home /srv/ta",
        "stop": f"example:\n  python3 {prog} --home /srv/ta",
    }
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{SUBCOMMANDS[command][0].upper()}{SUBCOMMANDS[command][1:]} (the same as "
        f"`taskautomation {command}`).",
        epilog=script_examples.get(command, EXAMPLES[command]),
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="the folder holding Tasks/, envs/, logs/ (default: $TASKAUTOMATION_HOME, else the folder of this script)",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    add_options(command, parser)
    return parser
