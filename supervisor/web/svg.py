"""Server-rendered SVG: the 24-hour timeline of runs and the per-task sparkline (pure functions).

Readable without colour: every mark carries a ``<title>`` (task, outcome word, start, duration) that
browsers and screen readers show, failures are drawn with a different shape (a tall bar with an outline),
missed slots as a hollow mark (an outline only), and the legend names every outcome. Colours come from CSS
classes (``o-ok``, ``o-failed``, ...), so the markup has no inline style and the page's Content-Security-Policy
can forbid inline styles.
All text is escaped here; the result is safe to insert as markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from markupsafe import Markup, escape

from ..history.store import OutcomeBin
from ..model import Outcome, RunRecord, ShownState
from ..query.timefmt import duration

LANE_H = 18
LABEL_W = 160
PLOT_W = 840
SPARK_W = 100
SPARK_H = 20
GOOD = frozenset({Outcome.OK.value, Outcome.TESTING.value})
# Not failures: nothing of the task's own went wrong. A missed slot is drawn hollow (app.css, ``.o-missed``).
NEUTRAL = frozenset({Outcome.SKIPPED.value, Outcome.KILLED.value, Outcome.MISSED.value})
_KNOWN = frozenset({o.value for o in Outcome} | {"running"})


def outcome_class(outcome: object) -> str:
    """A CSS class for an outcome word; unknown words map to a neutral class, a missing one to running."""
    word = outcome if isinstance(outcome, str) and outcome else "running"
    return "o-" + (word if word in _KNOWN else "unknown")


def _seconds(duration_s: float | None) -> str:
    return f", {duration(duration_s)}" if duration_s is not None else ""


_SEVERITY = {**{o.value: 3 for o in Outcome}, **dict.fromkeys(GOOD, 0), **dict.fromkeys(NEUTRAL, 1), "running": 2}


@dataclass(frozen=True)
class Segment:
    """Adjacent time bins of one task whose most severe outcome is the same: one mark on the timeline."""

    task: str
    outcome: str  # the most severe outcome in it (an Outcome value or "running")
    start: datetime
    end: datetime
    counts: tuple[tuple[str, int], ...]  # every outcome in it, with its count
    run_id: str | None  # the run, when the segment holds exactly one

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def title(self) -> str:
        if self.total == 1:
            return f"{self.task}: {self.outcome} at {self.start.astimezone():%Y-%m-%d %H:%M:%S} (run {self.run_id})"
        parts = ", ".join(f"{n} {o}" for o, n in self.counts)
        return f"{self.task}: {self.total} runs {self.start.astimezone():%H:%M}–{self.end.astimezone():%H:%M}: {parts}"


MAX_LANES = 40


def pick_lanes(tasks: list[dict[str, object]], *, limit: int = MAX_LANES) -> list[str]:
    """The tasks the timeline shows, at most ``limit`` (a taller picture is no longer an overview): running
    tasks and those whose last run failed first, then the rest by name; shown in name order."""

    def rank(task: dict[str, object]) -> tuple[int, str]:
        last = task.get("last_run")
        outcome = last.get("outcome") if isinstance(last, dict) else None
        running = task.get("state") == ShownState.RUNNING
        bad = isinstance(outcome, str) and _SEVERITY.get(outcome, 3) == 3
        return (0 if bad else 1 if running else 2, str(task["name"]).casefold())

    chosen = sorted(tasks, key=rank)[:limit]
    return sorted((str(t["name"]) for t in chosen), key=str.casefold)


def segments(bins: list[OutcomeBin]) -> list[Segment]:
    """Fold per-bin counts into segments (pure): a bin shows its most severe outcome (a failure beats a run
    in progress beats a skip beats a success), and neighbouring bins that show the same outcome merge."""
    per_bin: dict[tuple[str, int], list[OutcomeBin]] = {}
    for b in bins:
        per_bin.setdefault((b.task, b.bin), []).append(b)
    out: list[Segment] = []
    open_seg: tuple[str, int, str, datetime, datetime, dict[str, int], str] | None = None

    def close() -> None:
        if open_seg is not None:
            task, _, outcome, first, last, counts, run_id = open_seg
            total = sum(counts.values())
            out.append(
                Segment(
                    task=task,
                    outcome=outcome,
                    start=first,
                    end=last,
                    counts=tuple(sorted(counts.items(), key=lambda kv: -_SEVERITY.get(kv[0], 3))),
                    run_id=run_id if total == 1 else None,
                )
            )

    for (task, index), group in sorted(per_bin.items()):
        worst = max(group, key=lambda b: (_SEVERITY.get(b.outcome or "running", 3), b.count))
        outcome = worst.outcome or "running"
        first, last = min(b.first for b in group), max(b.last for b in group)
        if open_seg is not None and open_seg[0] == task and open_seg[1] == index - 1 and open_seg[2] == outcome:
            counts = open_seg[5]
            for b in group:
                counts[b.outcome or "running"] = counts.get(b.outcome or "running", 0) + b.count
            open_seg = (task, index, outcome, open_seg[3], max(open_seg[4], last), counts, open_seg[6])
            continue
        close()
        counts = {}
        for b in group:
            counts[b.outcome or "running"] = counts.get(b.outcome or "running", 0) + b.count
        open_seg = (task, index, outcome, first, last, counts, group[0].run_id)
    close()
    return out


def timeline(tasks: list[str], bins: list[OutcomeBin], *, now: datetime, hours: float = 24) -> Markup:
    """One lane per task over the last ``hours``; each segment a bar from its first start to its last end."""
    begin = now - timedelta(hours=hours)
    span = (now - begin).total_seconds()
    lanes = {name: i for i, name in enumerate(tasks)}
    height = LANE_H * max(len(tasks), 1) + 20
    width = LABEL_W + PLOT_W
    parts = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="Runs of the last {hours:g} hours, one lane per task" xmlns="http://www.w3.org/2000/svg">'
    ]
    for name, i in lanes.items():
        y = i * LANE_H
        parts.append(
            f'<text class="lane-label" x="{LABEL_W - 6}" y="{y + LANE_H - 5}" text-anchor="end">'
            f"{escape(_clip(name, 22))}<title>{escape(name)}</title></text>"
        )
        parts.append(f'<line class="lane" x1="{LABEL_W}" x2="{width}" y1="{y + LANE_H - 1}" y2="{y + LANE_H - 1}"/>')
    for hour in range(0, int(hours) + 1, 3):  # hour ticks, labelled with local time
        x = LABEL_W + PLOT_W * (hour * 3600) / span
        tick = (begin + timedelta(hours=hour)).astimezone()
        parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - 18}"/>')
        anchor = "end" if hour == int(hours) else "middle"  # the last label must not stick out on the right
        parts.append(
            f'<text class="tick-label" x="{x:.1f}" y="{height - 4}" text-anchor="{anchor}">{tick:%H:%M}</text>'
        )
    for seg in segments(bins):
        lane = lanes.get(seg.task)
        if lane is None or seg.end < begin:
            continue
        x1 = LABEL_W + PLOT_W * min((seg.end - begin).total_seconds(), span) / span
        # A run that just started still gets a visible mark inside the picture.
        x0 = min(LABEL_W + PLOT_W * max((seg.start - begin).total_seconds(), 0) / span, width - 3.0)
        bad = _SEVERITY.get(seg.outcome, 3) == 3
        y = lane * LANE_H + (2 if bad else 5)
        h = LANE_H - (5 if bad else 11)
        cls = f"run {outcome_class(seg.outcome)}{' bad' if bad else ''}"
        href = (
            f"/runs/{quote(seg.run_id, safe='')}"
            if seg.run_id
            else f"/tasks/{quote(seg.task, safe='')}" + ("" if seg.outcome == "running" else f"?outcome={seg.outcome}")
        )
        parts.append(
            f'<a href="{escape(href)}"><rect class="{cls}" x="{x0:.1f}" y="{y}" '
            f'width="{max(x1 - x0, 2.5):.1f}" height="{h}" data-outcome="{escape(seg.outcome)}">'
            f"<title>{escape(seg.title())}</title></rect></a>"
        )
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
    parts = [
        f'<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" height="{SPARK_H}" '
        f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
    ]
    for i, r in enumerate(records):
        outcome = r.outcome.value if r.outcome is not None else "running"
        h = max(2.0, (SPARK_H - 2) * (r.duration_s or 0.0) / longest)
        parts.append(
            f'<rect class="{outcome_class(outcome)}" x="{i * step + 0.5:.1f}" y="{SPARK_H - h:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{h:.1f}"><title>{outcome} '
            f"{r.started.astimezone():%m-%d %H:%M}{_seconds(r.duration_s)}</title></rect>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
