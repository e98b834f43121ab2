"""A permission fix is noticed: as a non-root user, ``chmod 000 requirements.txt``, start, then ``chmod 644``
is picked up within the debounce (inotify's IN_ATTRIB), with no ``touch`` and no wait for the safety rescan.

The scan's hash of a file it cannot read differs from the hash of its content, so the rescan that the
mode change wakes sees a change. Root reads any file, so as root the supervisor runs as ``nobody`` (util-linux
``setpriv``) on a home that user owns, or where nobody cannot run this interpreter (it lives in root's home)
as root without the capabilities that bypass file modes; skipped with the reason when neither works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import pytest
from tests.support.harness import SupervisorProcess
from tests.support.helpers import wait_for, without_dac_override, write_task

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")


def _why_nobody_cannot_run() -> str | None:
    if shutil.which("setpriv") is None:
        return "util-linux setpriv is not installed (scripts/system-deps.sh installs it)"
    # The supervisor builds envs from its own interpreter: virtualenv resolves and stats its real path.
    probe = subprocess.run(
        [
            *AS_NOBODY,
            sys.executable,
            "-c",
            "import os, sys, supervisor, watchdog; os.stat(os.path.realpath(sys.executable))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return f"user nobody cannot use {os.path.realpath(sys.executable)}: {probe.stderr.strip()[-300:]}"
    return None


@pytest.fixture
def user_home(tmp_path: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """(a home the supervisor's user owns, the argv prefix that runs the supervisor without the right to
    read any file): a non-root user as is; as root, user ``nobody`` where it can run this interpreter, else
    root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (file modes then bind it as they bind any user),
    said in a warning; skipped, with the reason, when neither works."""
    if os.geteuid() != 0:
        (tmp_path / "home").mkdir()
        yield tmp_path / "home", ()
        return
    reason = _why_nobody_cannot_run()
    if reason is None:
        # tmp_path's parents are root's 0700 folders: nobody gets a folder of its own in the temp dir.
        home = Path(tempfile.mkdtemp(prefix="ta-perm-"))
        try:
            os.chown(home, NOBODY, NOBODY)
            yield home, AS_NOBODY
        finally:
            shutil.rmtree(home, ignore_errors=True)
        return
    probe = subprocess.run([*without_dac_override(), "cat", "/proc/self/status"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"running as root; cannot run the supervisor as nobody ({reason}) nor drop DAC_OVERRIDE")
    warnings.warn(f"running the supervisor as root without DAC_OVERRIDE: {reason}", stacklevel=1)
    (tmp_path / "home").mkdir()
    yield tmp_path / "home", tuple(without_dac_override())


def _chown_tree(root: Path, prefix: tuple[str, ...]) -> None:
    if prefix == AS_NOBODY:
        for path in [root, *root.rglob("*")]:
            os.lchown(path, NOBODY, NOBODY)


def _scan_in_child(tasks: Path) -> tuple[str, str]:
    """(requirements hash, fingerprint) of task ``a`` as a user bound by file modes sees it."""
    code = (
        "import sys; from pathlib import Path; from supervisor.discovery.scan import scan_tasks; "
        "f = scan_tasks(Path(sys.argv[1]))['a']; print(f.requirements_hash, f.fingerprint)"
    )
    prefix = without_dac_override() if os.geteuid() == 0 else []
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code, str(tasks)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    digest, fingerprint = out.stdout.split()
    return digest, fingerprint


def test_the_scan_hash_of_an_unreadable_file_is_not_its_contents(tmp_path: Path) -> None:
    task = write_task(tmp_path, "a", requirements="# nothing to install\n")
    readable = _scan_in_child(tmp_path)
    (task / "requirements.txt").chmod(0)
    try:
        unreadable = _scan_in_child(tmp_path)
    finally:
        (task / "requirements.txt").chmod(0o644)
    assert unreadable[0].startswith("unsafe:") and unreadable[0] != readable[0]
    assert unreadable[1] != readable[1]
    assert _scan_in_child(tmp_path) == readable  # and readable again is the same as before


def test_chmod_644_after_starting_with_an_unreadable_requirements_file_is_picked_up(
    user_home: tuple[Path, tuple[str, ...]],
) -> None:
    home, prefix = user_home
    task = write_task(
        home / "Tasks",
        "perm",
        config="[Frequency]\nEveryXMinutes = 60\n[Global]\nRunOnStartup = True\n",
        requirements="# nothing to install\n",
    )
    requirements = task / "requirements.txt"
    _chown_tree(home, prefix)
    requirements.chmod(0)
    # The supervisor's user has no home folder of its own (nobody's is /nonexistent): caches go under HOME.
    env = dict(os.environ, HOME=str(home), UV_CACHE_DIR=str(home / ".uv-cache"), XDG_CACHE_HOME=str(home / ".cache"))
    with SupervisorProcess(home, prefix=prefix, env=env) as sup:
        wait_for(
            lambda: "requirements.txt" in (sup.task_status("perm").get("error") or ""),
            timeout=60,
            what=f"the unreadable requirements.txt to be reported\n{sup.log()[-2000:]}",
        )
        failed = sup.task_status("perm")
        assert failed["state"] in ("env-failed", "error"), failed
        assert "Permission denied" in failed["error"], failed

        requirements.chmod(0o644)  # a mode change only: not one byte of the file changes
        wait_for(
            lambda: len(sup.history("perm")) >= 1 and sup.history("perm")[0]["outcome"] == "ok",
            timeout=60,
            what=f"the task to load and run after chmod 644\n{sup.log()[-3000:]}",
        )
        assert not sup.task_status("perm").get("error")
