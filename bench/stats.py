"""Statistics, figures and the results table shared by every benchmark group.

Policy: every figure is a *median of repeated runs* shown with its min and max, next to a baseline measured in
the same run on the same machine (interleaved with ours where the benchmark allows it). A goal is either a
ratio against that baseline or an absolute bound; a figure that misses its goal is printed as FAIL, never
hidden. Nothing here measures anything: the group modules do, this module only summarises and renders.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence


@dataclass(frozen=True)
class Summary:
    """Median, spread and tail of one series of samples (all in the figure's unit)."""

    median: float
    low: float
    high: float
    p99: float
    count: int

    def show(self, unit: str, *, tail: bool = False) -> str:
        """``12.3 ms (11.0–14.1)``, or with ``tail`` the p99 as well."""
        if self.count == 1:
            return f"{_num(self.median)} {unit}".strip()
        text = f"{_num(self.median)} {unit} ({_num(self.low)}–{_num(self.high)}"
        if tail:
            text += f", p99 {_num(self.p99)}"
        return text + ")"


def summarize(values: Iterable[float]) -> Summary:
    """Summary of ``values``; p99 is the nearest-rank percentile (no interpolation beyond the data)."""
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("no samples to summarize")
    return Summary(
        median=statistics.median(data), low=data[0], high=data[-1], p99=percentile(data, 99.0), count=len(data)
    )


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def interleave(runs: int, *steps: Callable[[], float]) -> list[list[float]]:
    """Call each step once per round, in order, for ``runs`` rounds: A B A B ... (one list per step).

    Interleaving spreads slow phases of the machine (another test suite starting, a page-cache flush) over
    both sides instead of charging them to whichever ran second.
    """
    results: list[list[float]] = [[] for _ in steps]
    for _ in range(runs):
        for index, step in enumerate(steps):
            results[index].append(step())
    return results


@dataclass(frozen=True)
class Figure:
    """One row of the results table.

    ``passed`` is None when the figure has no goal or could not be measured (``note`` says why).
    """

    group: str
    name: str
    unit: str
    ours: Summary | None
    goal: str
    passed: bool | None
    baseline: Summary | None = None
    baseline_name: str = ""
    ratio: float | None = None  # ours / baseline, medians
    note: str = ""
    tail: bool = False  # show p99 beside min/max (latency distributions)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "n/a" if self.ours is not None else "not measured"
        return "PASS" if self.passed else "FAIL"


def ratio_of(ours: Summary | None, baseline: Summary | None) -> float | None:
    if ours is None or baseline is None or baseline.median == 0:
        return None
    return ours.median / baseline.median


def _num(value: float) -> str:
    """Three significant figures without scientific notation for everyday magnitudes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"


def _cells(figure: Figure) -> list[str]:
    ours = figure.ours.show(figure.unit, tail=figure.tail) if figure.ours else "—"
    if figure.baseline is not None:
        baseline = f"{figure.baseline_name}: {figure.baseline.show(figure.unit, tail=figure.tail)}"
    else:
        baseline = figure.baseline_name or "—"
    ratio = f"{figure.ratio:.2f}×" if figure.ratio is not None else "—"
    return [figure.name, ours, baseline, ratio, figure.goal, figure.verdict]


HEADERS = ["figure", "ours: median (min–max)", "baseline (same run)", "ratio", "goal", "result"]


def render_text(figures: Sequence[Figure]) -> str:
    """An aligned plain-text table (for the terminal), notes listed below it."""
    rows = [HEADERS] + [_cells(f) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = _notes(figures)
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def render_markdown(figures: Sequence[Figure], *, machine: dict[str, str], command: str, elapsed_s: float) -> str:
    """The results file: machine, command, the table, then one note per figure that has one."""
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in {elapsed_s:.0f} s. Medians of repeated runs with (min–max); latency "
        "figures also show p99. Baselines are measured in the same run on the same machine, interleaved "
        "with ours where the benchmark allows. Regenerate with `python bench/run.py`.",
        "",
        "| machine | |",
        "|---|---|",
    ]
    out += [f"| {key} | {value} |" for key, value in machine.items()]
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for figure in figures:
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(figure)) + " |")
    notes = _notes(figures)
    if notes:
        out += ["", "## Notes", ""] + [f"- {line[2:]}" if line.startswith("* ") else line for line in notes]
    return "\n".join(out) + "\n"


def _notes(figures: Sequence[Figure]) -> list[str]:
    return [f"* {f.name}: {f.note}" for f in figures if f.note]


def machine_info() -> dict[str, str]:
    """CPU model, cores, python, kernel, date: what a reader needs to compare two results files."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "unknown"
    return {
        "CPU": model,
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "kernel": f"{platform.system()} {platform.release()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start": load,
    }
