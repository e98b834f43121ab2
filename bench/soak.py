"""The long soak: months of runs compressed into minutes, sampling what must not grow.

A real supervisor (``main.py --home HOME``) with the default KeepRuns on a home of 500 tasks runs until its
history has recorded ``target_runs`` runs (100,000 for the full group), while this module samples, every few
seconds, its RSS, open fds and threads (``/proc/PID``), the history database (file + -wal + -shm) and the logs
folder. The goals:

* RSS plateaus: over the last quarter of the samples it grows by less than 2 %, and it stays ≤ 64 MiB;
* fds and threads flat: the last quarter's median is no higher than the second quarter's (plus a small
  slack for the runs in flight at the moment of a sample);
* the database is bounded by KeepRuns: no task holds more than KeepRuns + KeepRuns/10 finished rows (the
  prune cadence, see supervisor/history/recorder.py), and tasks that ran past that cap stop adding bytes;
* logs are bounded by rotation: no log file is larger than LogMaxBytes (plus one line), no more than
  LogBackups backups of any log.

Why mostly ``Testing = True`` tasks: a run of ``main()`` costs one interpreter start (about 40–60 ms of CPU
here), so 100,000 real runs would take over an hour of CPU on 2 shared cores, and the figure would measure
the machine's fork rate rather than the supervisor. A Testing run goes through the same loop phases, the same
history rows (outcome ``testing``), pruning and logging, without a child process — exactly the state that
grows with time. A few tasks run a trivial real ``main()`` so the process path (pipes, relay threads, the
monitor) is in the soak too, and a few "hot" tasks run every half second, long enough to pass KeepRuns and
be pruned, so the DB cap is exercised rather than assumed.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.harness import SupervisorProcess  # main.py --home HOME, as a user starts it

from supervisor.model.tasks import HomeConfig

from .common import Settings, temp_home, wait_for, write_task
from .stats import Figure, summarize

GROUP = "soak"
RSS_CAP_MIB = 64.0
PLATEAU_PCT = 2.0


@dataclass(frozen=True)
class SoakPlan:
    """The home's shape and how long to run. The default is the full soak; ``tiny`` is for the smoke test."""

    tasks: int = 500
    hot: int = 20  # run every hot_every_s: they pass KeepRuns and get pruned
    real: int = 10  # a trivial real main(): the process path
    every_s: float = 6.0  # the Testing tasks
    hot_every_s: float = 0.5
    real_every_s: float = 5.0
    target_runs: int = 100_000
    sample_every_s: float = 5.0
    timeout_s: float = 3 * 3600.0

    @staticmethod
    def tiny() -> SoakPlan:
        return SoakPlan(tasks=6, hot=2, real=1, target_runs=60, sample_every_s=0.5, timeout_s=60.0)


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    runs: int  # rows ever inserted (max rowid: pruning removes the oldest rows, never the newest)
    retained: int  # rows in the table now
    rss_mib: float
    fds: int
    threads: int
    db_bytes: int  # history.sqlite3 + -wal + -shm
    logs_bytes: int  # every file under logs/ except state/


def make_home(home: Path, plan: SoakPlan) -> None:
    for index in range(plan.tasks):
        if index < plan.hot:
            every, testing = plan.hot_every_s, True
        elif index < plan.hot + plan.real:
            every, testing = plan.real_every_s, False
        else:
            every, testing = plan.every_s, True
        write_task(
            home / "Tasks",
            f"s{index:03d}",
            config=f"[Frequency]\nEveryXMinutes = {every / 60:.6f}\n[Global]\nTesting = {testing}\n",
            main="def main():\n    return None\n",
        )


def _proc_status(pid: int) -> tuple[float, int]:
    rss = threads = None
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    if rss is None or threads is None:
        raise AssertionError(f"/proc/{pid}/status has no VmRSS or Threads")
    return rss, threads


def _files_bytes(folder: Path, *, skip: Path | None = None) -> int:
    total = 0
    for path in folder.rglob("*"):
        if skip is not None and path.is_relative_to(skip):
            continue
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # rotated away meanwhile
    return total


def _history_counts(database: Path) -> tuple[int, int]:
    if not database.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        inserted, retained = conn.execute("SELECT coalesce(max(rowid), 0), count(*) FROM runs").fetchone()
    except sqlite3.OperationalError:  # the table is not created yet
        return 0, 0
    finally:
        conn.close()
    return int(inserted), int(retained)


def take_sample(sup: SupervisorProcess, started: float) -> Sample:
    assert sup.proc is not None
    if sup.proc.poll() is not None:
        raise AssertionError(f"supervisor exited during the soak:\n{sup.console_text()[-3000:]}")
    pid = sup.proc.pid
    rss, threads = _proc_status(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    database = sup.paths.database
    inserted, retained = _history_counts(database)
    db_bytes = sum(p.stat().st_size for p in database.parent.glob(database.name + "*") if p.is_file())
    logs = _files_bytes(sup.paths.logs, skip=sup.paths.state)
    return Sample(time.monotonic() - started, inserted, retained, rss, fds, threads, db_bytes, logs)


def soak(home: Path, plan: SoakPlan) -> tuple[list[Sample], dict[str, int]]:
    """Run the supervisor on ``home`` until ``plan.target_runs``; the samples and the rows kept per task."""
    sup = SupervisorProcess(home)
    samples: list[Sample] = []
    try:
        sup.start(wait_ready=False)
        started = time.monotonic()
        wait_for(lambda: sup.paths.database.exists(), timeout=120, what="the history database")
        deadline = started + plan.timeout_s
        while True:
            sample = take_sample(sup, started)
            samples.append(sample)
            if sample.runs >= plan.target_runs:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"soak: only {sample.runs} of {plan.target_runs} runs in {plan.timeout_s:g} s")
            time.sleep(plan.sample_every_s)  # the sampling period itself, not a synchronisation
        per_task = _rows_per_task(sup.paths.database)
    finally:
        try:
            sup.stop()
        except Exception:  # noqa: BLE001 - a failed stop must still not leave the supervisor running
            sup.kill()
    return samples, per_task


def _rows_per_task(database: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT task, count(*) FROM runs WHERE outcome IS NOT NULL GROUP BY task").fetchall()
    finally:
        conn.close()
    return {str(task): int(count) for task, count in rows}


def _quarters(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(second quarter, last quarter) of the samples taken after start-up (the first sample with runs)."""
    steady = [s for s in samples if s.runs > 0] or samples
    n = len(steady)
    q = max(1, n // 4)
    return steady[q : 2 * q] or steady, steady[n - q :]


def plateau_pct(values: list[float]) -> float:
    """Growth over ``values`` in % of the first: the median of the last three against the first three."""
    head = statistics.median(values[:3])
    tail = statistics.median(values[-3:])
    return (tail - head) / head * 100 if head else 0.0


def figures_of(samples: list[Sample], per_task: dict[str, int], plan: SoakPlan, *, seconds: float) -> list[Figure]:
    home = HomeConfig()
    second, last = _quarters(samples)
    rss = [s.rss_mib for s in samples]
    growth = plateau_pct([s.rss_mib for s in last])
    end = samples[-1]
    runs_note = (
        f"{end.runs:,} runs in {seconds:.0f} s by {plan.tasks} tasks ({plan.hot} every {plan.hot_every_s:g} s, "
        f"{plan.real} real main() every {plan.real_every_s:g} s, the rest Testing every {plan.every_s:g} s); "
        f"{len(samples)} samples"
    )
    fd_slack, thread_slack = 2 + 2 * plan.real, 2 + 2 * plan.real  # a pipe pair / a relay thread per run in flight
    fds_second = statistics.median(s.fds for s in second)
    fds_last = statistics.median(s.fds for s in last)
    thr_second = statistics.median(s.threads for s in second)
    thr_last = statistics.median(s.threads for s in last)
    cap = home.keep_runs + max(1, home.keep_runs // 10)
    most = max(per_task.values(), default=0)
    hot_rows = [per_task.get(f"s{i:03d}", 0) for i in range(plan.hot)]
    bytes_per_row = end.db_bytes / end.retained if end.retained else 0.0
    projected = bytes_per_row * (cap + 1) * plan.tasks / 2**20
    log_cap = home.log_max_bytes * (home.log_backups + 1)
    return [
        Figure(
            GROUP,
            "soak: supervisor RSS, last quarter's growth",
            "%",
            summarize([growth]),
            f"< {PLATEAU_PCT:g} %",
            growth < PLATEAU_PCT,
            note=f"{runs_note}. RSS {rss[0]:.1f} → {max(rss):.1f} MiB (max) → {rss[-1]:.1f} MiB (end); growth is the "
            "median of the last three samples against the first three of the last quarter",
        ),
        Figure(
            GROUP,
            "soak: supervisor RSS, highest sample",
            "MiB",
            summarize([max(rss)]),
            f"≤ {RSS_CAP_MIB:g} MiB",
            max(rss) <= RSS_CAP_MIB,
            note=f"VmRSS of main.py's process; {end.retained:,} rows retained at the end",
        ),
        Figure(
            GROUP,
            "soak: open fds, last quarter vs second quarter (medians)",
            "fds",
            summarize([s.fds for s in last]),
            f"flat (≤ {fds_second:g} + {fd_slack})",
            fds_last <= fds_second + fd_slack,
            note=f"second quarter median {fds_second:g}, last quarter median {fds_last:g}",
        ),
        Figure(
            GROUP,
            "soak: threads, last quarter vs second quarter (medians)",
            "threads",
            summarize([s.threads for s in last]),
            f"flat (≤ {thr_second:g} + {thread_slack})",
            thr_last <= thr_second + thread_slack,
            note=f"second quarter median {thr_second:g}, last quarter median {thr_last:g}",
        ),
        Figure(
            GROUP,
            "soak: finished rows kept per task (hot tasks past KeepRuns)",
            "rows",
            summarize(hot_rows or [most]),
            f"≤ KeepRuns + KeepRuns/10 = {cap}",
            most <= cap,
            note=f"default KeepRuns = {home.keep_runs}; largest task {most} rows; database {end.db_bytes / 2**20:.1f} "
            f"MiB at the end ({bytes_per_row:.0f} B per retained row incl. -wal), so every task at the cap would "
            f"hold about {projected:.0f} MiB",
        ),
        Figure(
            GROUP,
            "soak: logs folder at the end",
            "MiB",
            summarize([end.logs_bytes / 2**20]),
            "every log ≤ LogMaxBytes, ≤ LogBackups backups",
            None,
            note=f"LogMaxBytes {home.log_max_bytes / 2**20:g} MiB × (LogBackups {home.log_backups} + 1) = "
            f"{log_cap / 2**20:g} MiB per log at most; checked file by file in log_violations()",
        ),
    ]


def log_violations(logs: Path, *, max_bytes: int, backups: int) -> list[str]:
    """Log files over the size cap (one long line of slack) or with more backups than allowed."""
    problems = []
    families: dict[str, int] = {}
    for path in logs.rglob("*.log*"):
        if path.parent.name == "state" or not path.is_file():
            continue
        base, _, suffix = path.name.partition(".log")
        if suffix:
            families[str(path.parent / base)] = families.get(str(path.parent / base), 0) + 1
        if path.stat().st_size > max_bytes + 64 * 1024:
            problems.append(f"{path}: {path.stat().st_size} bytes")
    problems += [f"{base}.log: {count} backups" for base, count in families.items() if count > backups]
    return problems


def run(settings: Settings, plan: SoakPlan | None = None) -> list[Figure]:
    plan = plan or (SoakPlan(target_runs=20_000, timeout_s=1800.0) if settings.quick else SoakPlan())
    with temp_home("soak", settings) as home:
        make_home(home, plan)
        started = time.monotonic()
        samples, per_task = soak(home, plan)
        seconds = time.monotonic() - started
        home_config = HomeConfig()
        problems = log_violations(home / "logs", max_bytes=home_config.log_max_bytes, backups=home_config.log_backups)
        _write_samples(settings, samples)
    figures = figures_of(samples, per_task, plan, seconds=seconds)
    logs = figures[-1]
    figures[-1] = Figure(
        logs.group,
        logs.name,
        logs.unit,
        logs.ours,
        logs.goal,
        not problems,
        note=logs.note + ("; " + "; ".join(problems[:3]) if problems else "; none over"),
    )
    return figures


def _write_samples(settings: Settings, samples: list[Sample]) -> None:
    """The raw series next to the scratch folder, for a reader who wants the curve, not the verdict."""
    out = settings.scratch / "ta-bench-soak-samples.tsv"
    lines = ["elapsed_s\truns\tretained\trss_mib\tfds\tthreads\tdb_bytes\tlogs_bytes"]
    lines += [
        f"{s.elapsed_s:.1f}\t{s.runs}\t{s.retained}\t{s.rss_mib:.2f}\t{s.fds}\t{s.threads}\t{s.db_bytes}\t{s.logs_bytes}"
        for s in samples
    ]
    out.write_text("\n".join(lines) + "\n")
    print(f"   soak samples written to {out}", flush=True)
