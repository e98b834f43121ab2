"""Server-rendered SVG: the 24-hour timeline of runs and the per-task sparkline (pure functions).

Readable without colour: every mark carries a ``<title>`` (task, outcome word, start, duration) that
browsers and screen readers show, failures are drawn with a different shape (a tall bar with an outline),
and the legend names every outcome. Colours come from CSS classes (``o-ok``, ``o-failed``, ...), so the
markup has no inline style and the page's Content-Security-Policy can forbid inline styles.
All text is escaped here; the result is safe to insert as markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from ..spec import Outcome, RunRecord

LANE_H = 18
LABEL_W = 160
PLOT_W = 840
SPARK_W = 100
SPARK_H = 20
GOOD = frozenset({Outcome.OK.value, Outcome.TESTING.value})
NEUTRAL = frozenset({Outcome.SKIPPED.value, Outcome.KILLED.value})


@dataclass(frozen=True)
class Mark:
    """One run placed on the timeline."""

    task: str
    run_id: str
    outcome: str  # an Outcome value, or "running"
    start: datetime
    end: datetime
    title: str


def outcome_class(outcome: str | None) -> str:
    """A CSS class for an outcome word; unknown words map to a neutral class."""
    word = outcome or "running"
    known = {o.value for o in Outcome} | {"running"}
    return "o-" + (word if word in known else "unknown")


def _title(record: RunRecord, outcome: str) -> str:
    duration = f", {record.duration_s:.1f} s" if record.duration_s is not None else ""
    return f"{record.task}: {outcome} at {record.started.astimezone():%Y-%m-%d %H:%M:%S}{duration} (run {record.run_id})"


def marks(records: list[RunRecord], *, now: datetime) -> list[Mark]:
    out = []
    for r in records:
        outcome = r.outcome.value if r.outcome is not None else "running"
        end = r.finished or now
        out.append(Mark(task=r.task, run_id=r.run_id, outcome=outcome, start=r.started, end=end,
                        title=_title(r, outcome)))
    return out


def timeline(tasks: list[str], records: list[RunRecord], *, now: datetime, hours: float = 24) -> Markup:
    """One lane per task over the last ``hours``; each run a bar from its start to its end."""
    begin = now - timedelta(hours=hours)
    span = (now - begin).total_seconds()
    lanes = {name: i for i, name in enumerate(tasks)}
    height = LANE_H * max(len(tasks), 1) + 20
    width = LABEL_W + PLOT_W
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="Runs of the last {hours:g} hours, one lane per task" xmlns="http://www.w3.org/2000/svg">']
    for name, i in lanes.items():
        y = i * LANE_H
        parts.append(f'<text class="lane-label" x="{LABEL_W - 6}" y="{y + LANE_H - 5}" text-anchor="end">'
                     f'{escape(_clip(name, 22))}<title>{escape(name)}</title></text>')
        parts.append(f'<line class="lane" x1="{LABEL_W}" x2="{width}" y1="{y + LANE_H - 1}" y2="{y + LANE_H - 1}"/>')
    for hour in range(0, int(hours) + 1, 3):  # hour ticks, labelled with local time
        x = LABEL_W + PLOT_W * (hour * 3600) / span
        tick = (begin + timedelta(hours=hour)).astimezone()
        parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 18}"/>')
        parts.append(f'<text class="tick-label" x="{x:.1f}" y="{height - 4}" text-anchor="middle">'
                     f'{tick:%H:%M}</text>')
    for mark in marks(records, now=now):
        lane = lanes.get(mark.task)
        if lane is None or mark.end < begin:
            continue
        x0 = LABEL_W + PLOT_W * max((mark.start - begin).total_seconds(), 0) / span
        x1 = LABEL_W + PLOT_W * min((mark.end - begin).total_seconds(), span) / span
        bad = mark.outcome not in GOOD and mark.outcome not in NEUTRAL and mark.outcome != "running"
        y = lane * LANE_H + (2 if bad else 5)
        h = LANE_H - (5 if bad else 11)
        cls = f"run {outcome_class(mark.outcome)}{' bad' if bad else ''}"
        parts.append(f'<a href="/runs/{escape(mark.run_id)}"><rect class="{cls}" x="{x0:.1f}" y="{y}" '
                     f'width="{max(x1 - x0, 2.5):.1f}" height="{h}" data-outcome="{escape(mark.outcome)}">'
                     f'<title>{escape(mark.title)}</title></rect></a>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(records: list[RunRecord]) -> Markup:
    """The last runs (oldest left): bar height = duration relative to the longest, class = outcome."""
    if not records:
        return Markup('<span class="muted">no runs</span>')
    longest = max((r.duration_s or 0.0) for r in records) or 1.0
    step = SPARK_W / max(len(records), 1)
    ok = sum(1 for r in records if r.outcome is not None and r.outcome.value in GOOD)
    label = f"{ok} of {len(records)} recent runs succeeded"
    parts = [f'<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" height="{SPARK_H}" '
             f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>']
    for i, r in enumerate(records):
        outcome = r.outcome.value if r.outcome is not None else "running"
        h = max(2.0, (SPARK_H - 2) * (r.duration_s or 0.0) / longest)
        parts.append(f'<rect class="{outcome_class(outcome)}" x="{i * step + 0.5:.1f}" y="{SPARK_H - h:.1f}" '
                     f'width="{max(step - 1, 1):.1f}" height="{h:.1f}"><title>{escape(_title(r, outcome))}'
                     f'</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"
