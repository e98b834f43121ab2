"""Helpers for the dashboard tests: history rows, task folders, log lines, a real `web` process."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from supervisor.history.store import HistoryStore
from supervisor.model import Outcome, RunRecord, Trigger

from . import REPO
from .helpers import wait_for

TOKEN = "t" * 64
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)


def make_task(home: Path, name: str, *, main: str = "def main():\n    return 'ok'\n", every: str = "60") -> Path:
    folder = home / "Tasks" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(main)
    (folder / "config.ini").write_text(f"[Frequency]\nEveryXMinutes = {every}\n")
    return folder


def add_runs(
    home: Path,
    task: str,
    outcomes: list[Outcome | None],
    *,
    start: datetime = T0,
    message: str = "done",
    step: timedelta = timedelta(minutes=1),
) -> list[str]:
    """One history row per outcome (None = still open), ``step`` apart; returns the run ids in order."""
    ids = []
    with HistoryStore(home / "logs" / "state" / "history.sqlite3") as records:
        for i, outcome in enumerate(outcomes):
            started = start + step * i
            run_id = f"{started:%Y%m%dT%H%M%S}-{task[:8].encode().hex()}{i:04x}"
            record = RunRecord(
                run_id=run_id,
                task=task,
                trigger=Trigger.SCHEDULE,
                started=started,
                due=started,
                log_path=home / "logs" / "tasks" / f"{task}.log",
            )
            records.start_run(record)
            if outcome is not None:
                duration = 3.0 + (i * 7) % 11  # varied, so a sparkline has a shape
                records.finish_run(
                    run_id,
                    finished=started + timedelta(seconds=duration),
                    outcome=outcome,
                    duration_s=duration,
                    exit_code=0 if outcome is Outcome.OK else 1,
                    message=message,
                )
            ids.append(run_id)
    return ids


def log_line(run_id: str, text: str, *, when: str = "2026-11-29 10:00:01,000") -> str:
    return f"{when} INFO    [run {run_id}] {text}\n"


class WebProcess:
    """``python -m supervisor web --listen 127.0.0.1:0`` as a user runs it; knows its printed login URL."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.out = home / "web-out.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.login_url = ""

    def start(self) -> WebProcess:
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "web", "--home", str(self.home), "--listen", "127.0.0.1:0"],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.login_url = wait_for(self._url, timeout=20, what="the login URL printed by `web`")
        return self

    def _url(self) -> str | None:
        assert self.proc is not None
        text = self.out.read_text(errors="replace")
        if self.proc.poll() is not None:
            raise AssertionError(f"web exited early ({self.proc.returncode}):\n{text}")
        found = re.search(r"(http://127\.0\.0\.1:\d+)/login\?token=([0-9a-f]+)", text)
        return found.group(0) if found else None

    @property
    def base(self) -> str:
        return self.login_url.split("/login")[0]

    @property
    def token(self) -> str:
        return self.login_url.split("token=")[1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> WebProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
