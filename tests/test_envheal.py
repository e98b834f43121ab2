"""Self-healing envs: an env whose base interpreter disappeared is detected and rebuilt once."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.envs.health import HealPolicy, env_interpreter_problem
from supervisor.envs.manager import EnvManager
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(120)


def _real_interpreter() -> Path:
    """The actual binary behind this venv's python (a copy of it runs anywhere: its libpython path is fixed)."""
    return Path(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable).resolve()


def _install_python(base: Path, version_name: str) -> None:
    """Put a copied interpreter at ``base/<version_name>`` and point ``base/python3`` at it, like a distro
    package that replaces /usr/bin/python3.X and its python3 symlink."""
    base.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_real_interpreter(), base / version_name)
    link = base / "python3"
    link.unlink(missing_ok=True)
    link.symlink_to(version_name)


def test_an_env_whose_base_interpreter_was_deleted_is_rebuilt_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = home / "base"
    _install_python(base, "python3-old")
    task = home / "Tasks" / "t"
    task.mkdir()
    manager = EnvManager(Paths(home), base_python=base / "python3", logger=logging.getLogger("test.envheal"))
    status = manager.ensure(task="t", requirements=task / "requirements.txt", task_dir=task)
    assert status.python.resolve() == (base / "python3-old").resolve()
    assert manager.broken_reason(status.key) is None

    # The upgrade: the old binary goes, a new one takes the python3 name.
    (base / "python3-old").unlink()
    _install_python(base, "python3-new")
    reason = manager.broken_reason(status.key)
    assert reason is not None and str(base / "python3-old") in reason and "gone" in reason
    assert not manager.is_ready(status.key)

    caplog.set_level(logging.INFO, logger="test.envheal")
    healed = manager.ensure(task="t", requirements=task / "requirements.txt", task_dir=task)
    assert healed.key == status.key and manager.is_ready(healed.key)
    assert healed.python.resolve() == (base / "python3-new").resolve()
    done = subprocess.run(
        [str(healed.python), "-c", "print('alive')"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "alive"
    rebuilt = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert rebuilt == [f"{reason}; rebuilding it for task t"]
    # Healthy again: a further ensure neither rebuilds nor logs.
    manager.ensure(task="t", requirements=task / "requirements.txt", task_dir=task)
    assert len([r for r in caplog.records if "rebuilding it" in r.getMessage()]) == 1


def test_a_base_folder_named_in_pyvenv_cfg_that_is_gone_is_broken(tmp_path: Path) -> None:
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    shutil.copy2(_real_interpreter(), env / "bin" / "python")  # a --copies venv: the binary itself survives
    (env / "pyvenv.cfg").write_text(f"home = {tmp_path / 'gone'}\n")
    assert (
        env_interpreter_problem(env) == f"the base interpreter folder {tmp_path / 'gone'} named in "
        f"{env / 'pyvenv.cfg'} is gone"
    )
    (tmp_path / "gone").mkdir()
    assert env_interpreter_problem(env) is None
    (env / "bin" / "python").unlink()
    assert env_interpreter_problem(env) == f"its interpreter {env / 'bin' / 'python'} is missing"


def test_heal_policy_rebuilds_once_until_a_build_succeeds() -> None:
    policy = HealPolicy()
    assert policy.should_rebuild("k")
    assert not policy.should_rebuild("k")  # the rebuild failed: do not loop on it
    policy.rebuilt("k")
    assert policy.should_rebuild("k")  # a later breakage (the next upgrade) heals again


def test_a_running_supervisor_rebuilds_the_env_once_and_runs_go_on(home: Path) -> None:
    """End to end: real envs, real runs. The base interpreter is replaced under a running supervisor."""
    from tests.support.harness import InProcessSupervisor
    from tests.support.helpers import wait_for

    base = home / "base"
    _install_python(base, "python3-old")
    task = home / "Tasks" / "who"
    task.mkdir()
    (task / "config.ini").write_text("[Frequency]\nEveryXMinutes = 0.01\n")  # a run every 0.6 s
    (task / "main.py").write_text(
        "import os, sys\n\ndef main():\n    out = os.environ['TASK_OUTPUT_DIR']\n    os.makedirs(out, exist_ok=True)\n"
        "    with open(os.path.join(out, 'python.txt'), 'w') as f:\n        f.write(os.path.realpath(sys.executable))\n"
        "    return 'ok'\n"
    )
    output = task / "Output" / "python.txt"
    logger = logging.getLogger(f"test.in_process.{home.name}")  # the in-process supervisor's log
    envs = EnvManager(Paths(home), base_python=base / "python3", logger=logger)
    with InProcessSupervisor(home, envs=envs) as running:
        wait_for(
            lambda: output.exists() and output.read_text().endswith("python3-old"),
            timeout=60,
            what="a run on the old interpreter",
        )
        (base / "python3-old").unlink()
        _install_python(base, "python3-new")
        wait_for(
            lambda: output.read_text().endswith("python3-new"),
            timeout=60,
            what="a run on the rebuilt env\n" + running.log()[-3000:],
        )
        log = running.log()
    assert log.count("rebuilding it for task who") == 1, log[-3000:]
