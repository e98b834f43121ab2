"""The shipped artifact is the tested one: build the wheel, install it (not editable) with ``[web,rq]`` into a
fresh venv, import every module of the package from there and run the console script; and install it as a
tool (``uv tool install``, pipx's kind of install) and go, with only the command it puts on PATH and from a
folder outside the checkout, from a crontab to a validated home.

Hermetic: the wheel's dependencies come from ``.cache/wheelhouse`` (``scripts/wheelhouse.sh``, run by
``scripts/test.sh``) with ``--no-index``; the wheel is built without build isolation, by the setuptools of the
test extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from uv import find_uv_bin

import supervisor
from tests.support import REPO

WHEELHOUSE = REPO / ".cache" / "wheelhouse"

pytestmark = pytest.mark.timeout(300)

# Imports every module of the installed package; prints where the package came from, then one line per module.
IMPORT_ALL = """
import importlib, pkgutil, sys
import supervisor
print(supervisor.__file__)
print("supervisor")
for info in pkgutil.walk_packages(supervisor.__path__, "supervisor."):
    if info.name == "supervisor.__main__":
        continue  # running it is the console script's test
    importlib.import_module(info.name)
    print(info.name)
"""


def _run(argv: list[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def _source_modules() -> set[str]:
    package = REPO / "supervisor"
    names = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names - {"supervisor.__main__"}


def _data_files(folder: Path) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel file, the fresh venv it is installed in)."""
    if not any(WHEELHOUSE.glob("*.whl")):
        pytest.fail(f"no wheelhouse at {WHEELHOUSE}: make it with `bash scripts/wheelhouse.sh` (scripts/test.sh does)")
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the sdist would hold, so nothing is written into the checkout (build/, egg-info).
    source = tmp / "source"
    shutil.copytree(REPO / "supervisor", source / "supervisor", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist)]
        + [str(source)],
        cwd=tmp,
    )
    (wheel,) = dist.glob("taskautomation-*.whl")
    venv = tmp / "venv"
    uv = find_uv_bin()
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=tmp)
    install = [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--no-index"]
    result = subprocess.run(
        [*install, "--find-links", str(WHEELHOUSE), f"{wheel}[web,rq]"],
        cwd=tmp,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert result.returncode == 0, (
        f"installing the wheel from {WHEELHOUSE} failed (a dependency changed? run `bash scripts/wheelhouse.sh`):\n"
        + result.stderr
    )
    return wheel, venv


def test_every_module_imports_from_the_installed_wheel(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = installed
    lines = _run([str(venv / "bin" / "python"), "-c", IMPORT_ALL], cwd=tmp_path).stdout.split()
    origin, modules = Path(lines[0]), set(lines[1:])
    assert origin.is_relative_to(venv), f"supervisor was imported from {origin}, not from the installed wheel"
    assert modules == _source_modules()
    # The in-env files are run by path inside a task's interpreter: they ship as files beside the package too.
    execution = origin.parent / "execution"
    assert all((execution / name).is_file() for name in ("_shim.py", "_wire.py", "_contain.py"))


def test_the_console_script_runs_from_the_installed_wheel(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = installed
    script = str(venv / "bin" / "taskautomation")
    version = _run([script, "--version"], cwd=tmp_path).stdout
    assert version.split() == ["taskautomation", supervisor.__version__]
    assert "--redis URL" in _run([script, "worker", "--help"], cwd=tmp_path).stdout
    assert "--listen" in _run([script, "web", "--help"], cwd=tmp_path).stdout


def test_the_package_data_is_in_the_wheel(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    folders = ("supervisor/web/templates/", "supervisor/web/static/", "supervisor/cli/templates/")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith(folders) and not name.endswith(".py")}
    expected = set().union(*(_data_files(REPO / folder) for folder in folders))
    expected = {name for name in expected if not name.endswith(".py")}
    assert expected and shipped == expected


@pytest.fixture(scope="module")
def tool(installed: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``uv tool install WHEEL[web,rq]`` (pipx's way: a venv of its own, one command on PATH), offline:
    (the command as it lands on PATH, the tool's venv)."""
    wheel, _ = installed
    tmp = tmp_path_factory.mktemp("tool")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "UV_PYTHON")}
    env.update(UV_TOOL_DIR=str(tmp / "tools"), UV_TOOL_BIN_DIR=str(tmp / "bin"), UV_PYTHON_DOWNLOADS="never")
    result = subprocess.run(
        [find_uv_bin(), "tool", "install", "--no-index", "--find-links", str(WHEELHOUSE), "--python", sys.executable]
        + [f"{wheel}[web,rq]"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return tmp / "bin" / "taskautomation", tmp / "tools" / "taskautomation"


def test_the_installed_tool_goes_from_crontab_to_a_validated_home(tool: tuple[Path, Path], tmp_path: Path) -> None:
    command, venv = tool
    run = str(command)
    home = tmp_path / "ta"
    made = _run([run, "init", str(home)], cwd=tmp_path).stdout
    assert f"taskautomation import-crontab --home {home}" in made and (home / "taskautomation.ini").is_file()
    crontab = REPO / "tests" / "data" / "crontab" / "debian-crontab.5-example"
    imported = _run([run, "import-crontab", str(crontab), "--home", str(home)], cwd=tmp_path).stdout
    assert "created 6 task(s)" in imported
    checked = _run([run, "validate", "--home", str(home)], cwd=tmp_path).stdout
    assert checked.strip().endswith("7 task(s) checked, 0 problem(s)")  # the 6 jobs and init's example
    script = _run([run, "completion", "bash"], cwd=tmp_path).stdout
    assert "complete " in script and "taskautomation" in script
    assert "--redis URL" in _run([run, "worker", "--help"], cwd=tmp_path).stdout  # the extras came along
    # The unit for this install kind runs the tool's own interpreter with -m supervisor (there is no main.py).
    unit = _run([run, "install-systemd", "--user", "--dry-run", "--home", str(home)], cwd=tmp_path).stdout
    assert f"ExecStart={venv / 'bin' / 'python'} -m supervisor run --home {home}" in unit.splitlines()
