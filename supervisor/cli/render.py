"""Human rendering of the status and history JSON documents: tables, times with zones, colours.

Pure functions over the documents that ``status --json`` / ``history --json`` print (dicts), never over the
loop's internals, so the offline CLI, the live CLI and any other reader render the same thing.

Policies:

* Every time carries its zone (``14:05:09 CET``, ``Nov 30 02:00 EST``): local to the reader's machine (its
  ``TZ``), or UTC with ``--utc``. Times of the current day show the time only, others the date too.
* Durations read as on the dashboard (``0.02 s``, ``2 min 5 s``: see ``query.timefmt``).
* Tables fit the given width (80 when output is piped): the widest free-text column is cut first, with
  ``…``, down to a minimum; only a table that cannot fit even then is left wider.
* Colour only when ``View.colour`` says so (a terminal, and ``NO_COLOR`` unset; see ``wants_colour``):
  red for failures, yellow for runs that did not run to their end (skipped, timeout, killed, interrupted)
  and for slots that never started (missed),
  green for ``ok``. Padding is computed on the plain text, so colour never breaks the alignment.
* ``status`` prints the table, then every current error, then the "why" lines: by default only for tasks
  that are not plainly scheduled (never ran, disabled, waiting for a window or an env...), cut to the
  width; ``--why`` prints every task's line in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence, TextIO

from ..model import ShownState
from ..query.timefmt import duration

ELLIPSIS = "…"
RESET = "\x1b[0m"
RED, GREEN, YELLOW = "\x1b[31m", "\x1b[32m", "\x1b[33m"
OUTCOME_COLOURS = {
    "ok": GREEN,
    "failed": RED,
    "crashed": RED,
    "memory": RED,
    "env-failed": RED,
    "skipped": YELLOW,
    "timeout": YELLOW,
    "killed": YELLOW,
    "interrupted": YELLOW,
    "missed": YELLOW,
}
STATE_COLOURS = {ShownState.ERROR.value: RED, ShownState.ENV_FAILED.value: RED, ShownState.BACKING_OFF.value: YELLOW}
GAP = "  "


@dataclass(frozen=True)
class View:
    """How to render: the reader's "now", UTC or local times, the width to fit, colours on or off."""

    now: datetime
    utc: bool = False
    width: int = 80
    colour: bool = False


@dataclass(frozen=True)
class Column:
    """A table column: its title, the minimum it may be cut to, and whether it is cut before others."""

    title: str
    min_width: int | None = None  # None: never cut
    priority: int = 0  # lower is cut first


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour on a terminal only; ``NO_COLOR`` (any non-empty value, no-color.org) or ``TERM=dumb`` turn it off."""
    if environ.get("NO_COLOR", "") or environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ values
def _zoned(moment: datetime, view: View) -> datetime:
    # astimezone() without an argument converts to the machine's zone as of that instant (DST included).
    return moment.astimezone(timezone.utc) if view.utc else moment.astimezone()


def zone_name(moment: datetime) -> str:
    """The zone's abbreviation (``CET``), or its offset (``+0530``) where the zone has no abbreviation."""
    name = moment.strftime("%Z")
    return name if name and not name.startswith(("+", "-")) else moment.strftime("%z")


def format_time(iso: str | None, view: View) -> str:
    """``14:05:09 CET`` today, ``Nov 30 02:00 CET`` this year, ``2025-11-30 02:00 CET`` otherwise; ``-`` for none."""
    if not iso:
        return "-"
    moment = _zoned(datetime.fromisoformat(iso), view)
    today = _zoned(view.now, view)
    if moment.date() == today.date():
        text = moment.strftime("%H:%M:%S")
    elif moment.year == today.year:
        text = moment.strftime("%b %d %H:%M")
    else:
        text = moment.strftime("%Y-%m-%d %H:%M")
    return f"{text} {zone_name(moment)}"


def format_full_time(iso: str, view: View) -> str:
    """A full date and time with its zone, for sentences (``2026-11-29 14:05:09 CET``)."""
    moment = _zoned(datetime.fromisoformat(iso), view)
    return f"{moment:%Y-%m-%d %H:%M:%S} {zone_name(moment)}"


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending in ``…`` when something was cut."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + ELLIPSIS if width > 0 else ""


def paint(text: str, colour: str | None, view: View) -> str:
    return f"{colour}{text}{RESET}" if colour and view.colour and text else text


# ------------------------------------------------------------------------------------------------ tables
def fit_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, width: int) -> list[int]:
    """Column widths: natural widths, cut (lowest priority first, each to its minimum) until the row fits."""
    widths = [max([len(c.title), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    excess = sum(widths) + len(GAP) * (len(columns) - 1) - width
    for i in sorted(range(len(columns)), key=lambda i: columns[i].priority):
        minimum = columns[i].min_width
        if excess <= 0:
            break
        if minimum is None:
            continue
        take = min(excess, max(widths[i] - max(minimum, len(columns[i].title)), 0))
        widths[i] -= take
        excess -= take
    return widths


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    view: View,
    *,
    colours: Sequence[Sequence[str | None]] | None = None,
) -> list[str]:
    """Aligned lines: a title row and one line per row, each cell cut to its column and maybe coloured."""
    widths = fit_widths(columns, rows, width=view.width)
    lines = [GAP.join(c.title.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for r, row in enumerate(rows):
        cells = []
        for i, (text, w) in enumerate(zip(row, widths)):
            shown = cut(text, w)
            colour = colours[r][i] if colours is not None else None
            cells.append(paint(shown, colour, view) + " " * (w - len(shown)))
        lines.append(GAP.join(cells).rstrip())
    return lines


# ------------------------------------------------------------------------------------------------ status
STATUS_COLUMNS = (
    Column("TASK", 8, 0),
    Column("STATE", 7, 1),
    Column("NEXT RUN"),
    Column("LAST RUN"),
    Column("OUTCOME", 7, 2),
    Column("DURATION"),
)


def plainly_scheduled(task: Mapping[str, Any]) -> bool:
    """Scheduled (or running) as usual after an earlier run, with no error: its "why" says nothing new (it
    does when that run is a ``missed`` one)."""
    shown = task.get("state") in (ShownState.SCHEDULED, ShownState.RUNNING)
    last = task.get("last_run")
    return shown and not task.get("error") and last is not None and last.get("outcome") != "missed"


def next_shown(task: Mapping[str, Any], view: View) -> str:
    """The NEXT column: the next due time; for an After task without one, its upstreams ("after backup")."""
    if task.get("after") and not task.get("next_run"):
        return "after " + ", ".join(task["after"])
    return format_time(task.get("next_run"), view)


def supervisor_line(sup: Mapping[str, Any] | None, offline: Mapping[str, Any] | None, view: View, *, home: str) -> str:
    """The first line of ``status``: running (live), running but not answering (offline), or not running."""
    if sup:
        return f"supervisor: running (pid {sup['pid']}, since {format_full_time(sup['started'], view)})"
    if offline and offline.get("supervisor_running"):
        pid = f" (pid {offline['pid']})" if offline.get("pid") else ""
        return f"supervisor: running{pid} but did not answer; states unknown, figures from the history"
    return f"supervisor: not running on {home}"


def render_status(status: Mapping[str, Any], view: View, *, home: str, why_all: bool = False) -> list[str]:
    """The human ``status``: supervisor line, task table, errors, then the "why" block."""
    sup = status.get("supervisor")
    lines = [supervisor_line(sup, status.get("offline"), view, home=home)]
    tasks: list[Mapping[str, Any]] = status.get("tasks", [])
    rows, colours = [], []
    for task in tasks:
        last = task.get("last_run") or {}
        outcome = last.get("outcome") or "-"
        rows.append(
            [
                task["name"],
                task["state"],
                next_shown(task, view),
                format_time(last.get("started"), view),
                outcome,
                duration(last.get("duration_s")),
            ]
        )
        colours.append([None, STATE_COLOURS.get(task["state"]), None, None, OUTCOME_COLOURS.get(outcome), None])
    lines.extend(table(STATUS_COLUMNS, rows, view, colours=colours))
    errors = [task["error"] for task in tasks if task.get("error")]
    if errors:
        lines.append("")
        # Every error already starts with "task 'NAME': ..."; the full text, never cut: it is the fix.
        lines.extend(paint(error, RED, view) if view.colour else error for error in errors)
    notes = list(_why_lines(tasks, view, why_all=why_all, live=sup is not None))
    if notes:
        lines.append("")
        lines.append("why:")
        lines.extend(notes)
    return lines


def _why_lines(tasks: Iterable[Mapping[str, Any]], view: View, *, why_all: bool, live: bool) -> Iterable[str]:
    for task in tasks:
        why = task.get("why")
        if not why:
            continue
        if not why_all:
            # Offline every line says "the supervisor is not running"; errors are printed above.
            if not live or plainly_scheduled(task) or task.get("state") in (ShownState.ERROR, ShownState.ENV_FAILED):
                continue
            yield cut(f"  {task['name']}: {why}", view.width)
        else:
            yield f"  {task['name']}: {why}"


# ------------------------------------------------------------------------------------------------ history
HISTORY_COLUMNS = (
    Column("RUN"),
    Column("TRIGGER"),
    Column("STARTED"),
    Column("OUTCOME"),
    Column("DURATION"),
    Column("PEAK MB"),
    Column("MESSAGE", 20, 0),
)


def render_history(runs: Sequence[Mapping[str, Any]], view: View) -> list[str]:
    """The human ``history``: one row per run, newest first; MESSAGE is the message's last line. A ``missed``
    row's OUTCOME says how many slots it stands for and why: ``missed x12 (down)``."""
    rows, colours = [], []
    for run in runs:
        message = (run.get("message") or "").strip().splitlines()
        outcome = run.get("outcome") or "running"
        peak = run.get("peak_rss_mb")
        attempt = run.get("attempt", 1)  # a retry shows its attempt number: "retry #2"
        trigger = run["trigger"] if attempt == 1 else f"{run['trigger']} #{attempt}"
        if run.get("params"):  # run-now --env, as stored (secrets masked)
            trigger += " " + " ".join(f"{key}={value}" for key, value in run["params"].items())
        rows.append(
            [
                run["run_id"],
                trigger,
                format_time(run["started"], view),
                f"{outcome} x{run.get('slots') or 1} ({run.get('reason')})" if outcome == "missed" else outcome,
                duration(run.get("duration_s")),
                f"{peak:.0f}" if peak else "-",
                message[-1] if message else "",
            ]
        )
        colours.append([None, None, None, OUTCOME_COLOURS.get(outcome), None, None, None])
    return table(HISTORY_COLUMNS, rows, view, colours=colours)


def outcome_line(run: Mapping[str, Any], view: View) -> str:
    """One line on how a run ended: ``run ID of 'NAME': ok in 0.05 s: returned: done``."""
    outcome = run.get("outcome") or "running"
    message = (run.get("message") or "").strip().splitlines()
    tail = f": {message[-1]}" if message else ""
    return (
        f"run {run['run_id']} of {run['task']!r}: {paint(outcome, OUTCOME_COLOURS.get(outcome), view)} "
        f"in {duration(run.get('duration_s'))}{tail}"
    )
