"""``import-crontab`` end to end: real crontab text (Debian's /etc/crontab, a cron.d file, crontab(5)'s example,
a user crontab; tests/data/crontab/README.md says where each comes from) imported by the CLI into a home;
every folder passes ``validate`` and its ``next`` is cronsim's own reading of the line; imported jobs run
under a real supervisor as cron would run them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from supervisor.config.schema import read_task_config
from tests.support import REPO
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for

DATA = Path(__file__).resolve().parent / "data" / "crontab"
MACHINE_ZONE = "America/New_York"
FROM = "2026-03-07T12:00"  # a DST change (2026-03-08 in New York) lies inside the compared times
# crontab(5)'s meaning of the shorthands, written out here so the comparison does not reuse the code under test.
SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

pytestmark = pytest.mark.timeout(180)


def _cli(
    home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args, "--home", str(home)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env={**os.environ, "TZ": MACHINE_ZONE, **(env or {})},
    )


def _imported(home: Path) -> dict[str, dict[str, object]]:
    """folder name -> its .crontab.json, for every folder an import made."""
    found = {}
    for folder in sorted((home / "Tasks").iterdir()):
        marker = folder / ".crontab.json"
        if marker.is_file():
            found[folder.name] = json.loads(marker.read_text())
    return found


@pytest.mark.parametrize(
    ("fixture", "system", "jobs"),
    [
        ("debian-etc-crontab", True, 4),
        ("debian-cron.d-e2scrub_all", True, 2),
        ("debian-crontab.5-example", False, 6),
        ("user-crontab", False, 7),
    ],
)
def test_real_crontabs_import_validate_and_their_next_is_cronsims_reading(
    tmp_path: Path, fixture: str, system: bool, jobs: int
) -> None:
    home = tmp_path / "home"
    source = DATA / fixture
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    result = _cli(home, "import-crontab", str(source), *(["--system"] if system else []))
    assert f"created {jobs} task(s)" in result.stdout, result.stdout + result.stderr
    assert result.returncode == (1 if fixture == "user-crontab" else 0), result.stderr  # it has lines to skip
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before, "the crontab must never be modified"
    checked = _cli(home, "validate")
    assert checked.returncode == 0 and f"{jobs} task(s) checked, 0 problem(s)" in checked.stdout, checked.stdout
    imported = _imported(home)
    assert len(imported) == jobs and all(name.isidentifier() for name in imported)
    for name, marker in imported.items():
        user, schedule, _command, _n = marker["identity"]  # type: ignore[misc]
        assert user == ("root" if system else None)
        spec = read_task_config(home / "Tasks" / name / "config.ini", task=name).spec
        assert not spec.enabled, f"{name} must be created disabled"
        shown = json.loads(_cli(home, "next", name, "--from", FROM, "--count", "6", "--json").stdout)["next"]
        if schedule == "@reboot":
            assert shown == [] and spec.run_on_startup
            continue
        zone = ZoneInfo(spec.time_zone or MACHINE_ZONE)
        start = datetime.fromisoformat(FROM).replace(tzinfo=zone)
        expected = CronSim(SHORTHANDS.get(str(schedule), str(schedule)), start)
        assert shown == [next(expected).isoformat() for _ in range(6)], f"{name}: {marker['text']}"


def test_a_second_import_creates_nothing_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    crontab = str(DATA / "user-crontab")
    plan = _cli(home, "import-crontab", crontab, "--dry-run")
    assert "dry run: 7 task(s) would be created" in plan.stdout and not home.exists()
    header = plan.stdout.splitlines()[0].split()
    assert header == ["LINE", "TASK", "SCHEDULE", "KIND", "STATUS", "COMMAND"]
    for number, reason in ((18, "'L' (last day)"), (19, "'#'"), (20, "bad minute"), (21, "@every")):
        assert any(
            line.startswith(f"line {number}: not imported: ") and reason in line for line in plan.stdout.splitlines()
        )
    first = _cli(home, "import-crontab", crontab)
    names = sorted(_imported(home))
    assert "comment lines 10, 11, 12, 13, 14, 17, 22 out: sed -i '10s/^/#/;11s/^/#/" in first.stdout
    again = _cli(home, "import-crontab", crontab)
    rows = [line for line in again.stdout.splitlines() if line[:1].isdigit()]
    assert "nothing new: every job" in again.stdout and len(rows) == 7
    assert all("imported before" in row for row in rows)
    assert sorted(_imported(home)) == names
    assert sorted(p.name for p in (home / "Tasks").iterdir()) == names  # no staging folder left behind
    env = home / "Tasks" / "curl_ping" / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    for private in (env.parent, env.parent / "Output", env.parent / "main.py", env.parent / "config.ini"):
        assert stat.S_IMODE(private.stat().st_mode) & 0o077 == 0, f"{private} is readable by others"
    assert "BACKUP_DIR='/srv/backup '" in env.read_text() and "MAILTO" not in env.read_text()
    config = (home / "Tasks" / "curl_ping" / "config.ini").read_text()
    assert "Urls = mailto://localhost?to=ops@example.org" in config and "TimeZone = Europe/Berlin" in config
    assert "[Notify]" not in (home / "Tasks" / "http_server" / "config.ini").read_text()  # MAILTO="" below it


def test_without_a_file_it_reads_crontab_l(tmp_path: Path) -> None:
    # A stand-in for the crontab program on PATH: the real one reads the machine's cron spool.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text(f'#!/bin/sh\n[ "$1" = -l ] && exec cat {DATA / "debian-crontab.5-example"}\nexit 2\n')
    fake.chmod(0o755)
    home = tmp_path / "home"
    path = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = _cli(home, "import-crontab", env=path)
    assert "created 6 task(s)" in result.stdout, result.stderr
    assert "crontab -l | sed '8s/^/#/;10s/^/#/" in result.stdout and "| crontab -" in result.stdout
    fake.write_text("#!/bin/sh\necho 'no crontab for tester' >&2\nexit 1\n")
    failed = _cli(tmp_path / "other", "import-crontab", env=path)
    assert failed.returncode == 1 and failed.stderr.strip().endswith(
        "crontab -l failed (exit 1): no crontab for tester"
    )
    piped = _cli(tmp_path / "piped", "import-crontab", "-", stdin="@daily echo from stdin\n")
    assert "created 1 task(s)" in piped.stdout and "echo_stdin" in piped.stdout


def _crontab_for_runs(tmp_path: Path) -> str:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the job that runs as nobody writes here too
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "record.py").write_text(
        "import json, os, sys\n"
        "from helper import VALUE\n"  # its own folder comes first on sys.path, as under `python3 record.py`
        "open(os.path.join(os.environ['OUT'], 'python.json'), 'w').write(json.dumps(\n"
        "    {'argv': sys.argv, 'cwd': os.getcwd(), 'value': VALUE, 'prefix': sys.prefix}))\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    (scripts / "helper.py").write_text("VALUE = 42\n")
    (scripts / "requirements.txt").write_text("# nothing to install\n")
    return (
        f"OUT={out}\n"
        f"HOME={tmp_path}\n"
        "# at a time the test never reaches: these run through run-now only\n"
        f'0 0 1 1 * cat > "$OUT/stdin.txt"%line one%line 100\\%\n'
        "0 0 1 1 * echo failing; exit 3\n"
        f"0 0 1 1 * python3 -u {scripts / 'record.py'} 0 'two words'\n"
        f"0 0 1 1 * python3 {scripts / 'record.py'} 4\n"
        '@reboot pwd > "$OUT/reboot.txt"\n'
    )


def test_imported_jobs_run_as_cron_would_run_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    crontab = tmp_path / "crontab"
    crontab.write_text(_crontab_for_runs(tmp_path))
    result = _cli(home, "import-crontab", str(crontab), "--enable")
    assert result.returncode == 0 and "created 5 task(s)" in result.stdout, result.stdout + result.stderr
    names = {marker["line"]: name for name, marker in _imported(home).items()}
    stdin_job, failing, ok_py, failing_py, reboot = (names[n] for n in (4, 5, 6, 7, 8))
    out = tmp_path / "out"
    with SupervisorProcess(home) as sup:
        sup.wait_log(f"task {ok_py!r}: loaded", timeout=90)
        sup.wait_log(f"task {failing_py!r}: loaded", timeout=90)
        reboot_out = wait_for(lambda: (out / "reboot.txt").is_file() and (out / "reboot.txt").read_text(), timeout=60)
        assert reboot_out.strip() == str(tmp_path)  # cron's working folder: HOME
        assert _cli(home, "run-now", stdin_job, "--wait").returncode == 0
        assert (out / "stdin.txt").read_text() == "line one\nline 100%"
        assert _cli(home, "run-now", failing, "--wait").returncode == 1
        assert "failing" in sup.task_log(failing)
        assert _cli(home, "run-now", ok_py, "--wait").returncode == 0
        recorded = json.loads((out / "python.json").read_text())
        assert recorded["argv"][1:] == ["0", "two words"] and recorded["cwd"] == str(tmp_path)
        assert recorded["value"] == 42 and recorded["prefix"].startswith(str(home / "envs"))
        assert _cli(home, "run-now", failing_py, "--wait").returncode == 1
        runs = {name: sup.history(name) for name in (failing, failing_py, reboot)}
        assert sup.task_status(reboot)["state"] == "done"
    assert (runs[failing][0]["outcome"], runs[failing][0]["exit_code"]) == ("failed", 3)
    assert (runs[failing_py][0]["outcome"], runs[failing_py][0]["exit_code"]) == ("failed", 4)
    assert [run["trigger"] for run in runs[reboot]] == ["startup"]
    copied = (home / "Tasks" / ok_py / "requirements.txt").read_text()
    assert copied.startswith("# Copied from ") and "# nothing to install" in copied


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the crontab's user needs a root supervisor")
def test_a_system_job_runs_as_its_user_under_a_root_supervisor(tmp_path: Path) -> None:
    # pytest's own temporary folders are private to root: the job's user writes to a folder it can reach.
    out = Path(tempfile.mkdtemp(prefix="import-crontab-"))
    try:
        out.chmod(0o777)
        crontab = tmp_path / "cron.d-job"
        crontab.write_text(f"HOME={out}\n0 0 1 1 * nobody id -un > whoami; pwd >> whoami\n")
        home = tmp_path / "home"
        assert _cli(home, "import-crontab", "--system", str(crontab), "--enable").returncode == 0
        (name,) = _imported(home)
        with SupervisorProcess(home) as sup:
            sup.wait_log(f"task {name!r}: loaded", timeout=90)
            result = _cli(home, "run-now", name, "--wait")
            assert result.returncode == 0, result.stdout + sup.task_log(name)
        user, cwd = (out / "whoami").read_text().split()
        assert (user, cwd) == ("nobody", str(out))
    finally:
        shutil.rmtree(out)
