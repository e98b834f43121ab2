"""EnvManager: content-addressed per-task virtualenvs. Hermetic: wheels are built on the spot, installs are
offline (--no-index --find-links), and installer calls are observed through the injected ``run`` seam."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pytest
from tests.support.helpers import build_wheel, wait_for

from supervisor.envs.installer import InstallerRun, run_installer, summarize_installer_output
from supervisor.envs.manager import MARKER_NAME, EnvManager
from supervisor.envs.reqparse import normalize_requirements, references_relative_path
from supervisor.errors import ConfigError, EnvBuildError
from supervisor.paths import Paths


@dataclass
class RecordingRunner:
    """Installer seam: records every call, then runs the real installer (or fakes success)."""

    real: bool = True
    calls: list[Sequence[str]] = field(default_factory=list)
    envs: list[Mapping[str, str]] = field(default_factory=list)
    cwds: list[Path] = field(default_factory=list)
    pass_fds: list[Sequence[int]] = field(default_factory=list)

    def __call__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, pass_fds: Sequence[int] = ()
    ) -> InstallerRun:
        self.calls.append(list(argv))
        self.envs.append(dict(env))
        self.cwds.append(cwd)
        self.pass_fds.append(tuple(pass_fds))
        if not self.real:
            return InstallerRun(0, "fake install\n")
        return run_installer(argv, cwd=cwd, env=env, timeout=timeout, pass_fds=pass_fds)


@pytest.fixture(autouse=True)
def private_uv_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep uv's cache out of the user's home; one per session so tests still share downloads-free wheels."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "uv-cache"))


@pytest.fixture
def paths(home: Path) -> Paths:
    return Paths(home)


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """A find-links folder with mypkg 1.0 and 2.0."""
    folder = tmp_path / "wheels"
    build_wheel(folder, "mypkg", "1.0")
    build_wheel(folder, "mypkg", "2.0")
    return folder


def make_task(paths: Paths, name: str, requirements: str | None) -> tuple[Path, Path]:
    """Tasks/NAME with a requirements.txt (None: no file). Returns (task_dir, requirements path)."""
    task_dir = paths.task_dir(name)
    task_dir.mkdir(parents=True, exist_ok=True)
    req = task_dir / "requirements.txt"
    if requirements is not None:
        req.write_text(textwrap.dedent(requirements))
    return task_dir, req


def pinned(wheels: Path, spec: str) -> str:
    return f"--no-index\n--find-links {wheels}\n{spec}\n"


def env_python_says(python: Path, code: str, *, cwd: Path) -> str:
    result = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def mypkg_version(python: Path, *, cwd: Path) -> str:
    return env_python_says(python, "import mypkg; print(mypkg.__version__)", cwd=cwd)


# ---------------------------------------------------------------------------------------------------------
# Pure logic
# ---------------------------------------------------------------------------------------------------------


def test_normalize_drops_comments_blanks_and_trailing_space_but_keeps_order_and_url_fragments() -> None:
    text = (
        "# header\n\nmypkg==1.0   # pinned for reasons\n   \nother>=2 \\\n  ,<3\n"
        "pkg @ https://example.invalid/pkg.whl#sha256=abc\n--no-index\t\n"
    )
    assert normalize_requirements(text) == (
        "mypkg==1.0",
        "other>=2   ,<3",
        "pkg @ https://example.invalid/pkg.whl#sha256=abc",
        "--no-index",
    )


@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        "--editable=.",
        "./pkg",
        "pkg/sub",
        "mypkg-1.0-py3-none-any.whl",
        "--find-links wheels",
        "--find-links=wheels",
        "-f wheels",
        "-r other.txt",
        "-rother.txt",
        "-c constraints.txt",
        "file:pkg",
        "mypkg @ file:./pkg",
        "--index-url simple",
    ],
)
def test_relative_local_references_are_detected(line: str) -> None:
    assert references_relative_path((line,))


@pytest.mark.parametrize(
    "line",
    [
        "mypkg==1.0",
        "mypkg>=1; python_version >= '3.8'",
        "--find-links /opt/wheels",
        "-r /abs/other.txt",
        "file:///abs/pkg",
        "pkg @ https://example.invalid/pkg-1.0.tar.gz",
        "--index-url https://example.invalid/",
        "--no-index",
        "mypkg[extra]~=1.2",
    ],
)
def test_absolute_or_index_references_are_not_relative(line: str) -> None:
    assert not references_relative_path((line,))


def test_summary_keeps_pips_reason_lines() -> None:
    output = (
        "Looking in links: /somewhere\n"
        "ERROR: Could not find a version that satisfies the requirement nosuchpkg (from versions: none)\n"
        "ERROR: No matching distribution found for nosuchpkg\n"
    )
    summary = summarize_installer_output(output)
    assert "No matching distribution found for nosuchpkg" in summary
    assert "Looking in links" not in summary


def test_summary_keeps_uvs_reason_in_plain_and_terminal_formats() -> None:
    plain = (
        "Using Python 3.11.7 environment at: /x\nerror: No solution found when resolving dependencies\n"
        "  cause: Because nosuchpkg was not found in the provided package locations and you require "
        "nosuchpkg, we can conclude that your requirements are unsatisfiable.\n"
    )
    fancy = (
        "  \x1b[31m×\x1b[0m No solution found when resolving dependencies:\n"
        "  ╰─▶ Because nosuchpkg was not found in the package registry and you require\n"
        "      nosuchpkg, we can conclude that your requirements are unsatisfiable.\n"
    )
    for output in (plain, fancy):
        summary = summarize_installer_output(output)
        assert "Because nosuchpkg was not found" in summary
        assert "requirements are unsatisfiable" in summary
        assert "Using Python" not in summary and "\x1b" not in summary


def test_summary_falls_back_to_the_last_lines() -> None:
    assert summarize_installer_output("one\ntwo\nthree\nfour\n") == "two; three; four"


# ---------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------


def test_key_ignores_comments_blank_lines_and_trailing_spaces(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    dir_a, req_a = make_task(paths, "a", "--no-index\n--find-links /opt/w\nmypkg==1.0\n")
    dir_b, req_b = make_task(paths, "b", "# my deps\n\n--no-index   \n--find-links /opt/w\n\nmypkg==1.0  # pin\n")
    key = manager.key_for(req_a, task_dir=dir_a)
    assert key == manager.key_for(req_b, task_dir=dir_b)
    assert key == manager.key_for(req_a, task_dir=dir_a)  # stable
    assert len(key) == 16 and int(key, 16) >= 0


def test_key_changes_with_a_pin_and_with_the_installer(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    task_dir, req = make_task(paths, "a", "mypkg==1.0\n")
    first = manager.key_for(req, task_dir=task_dir)
    req.write_text("mypkg==2.0\n")
    assert manager.key_for(req, task_dir=task_dir) != first
    req.write_text("mypkg==1.0\n")
    pip_manager = EnvManager(paths, installer="pip", run=RecordingRunner(real=False))
    assert pip_manager.key_for(req, task_dir=task_dir) != first


def test_missing_requirements_is_the_same_as_empty(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    dir_a, req_a = make_task(paths, "a", None)
    dir_b, req_b = make_task(paths, "b", "# nothing yet\n\n")
    assert manager.key_for(req_a, task_dir=dir_a) == manager.key_for(req_b, task_dir=dir_b)


def test_relative_requirements_include_the_task_dir_absolute_ones_do_not(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    for text, shared in (
        ("-e .\n", False),
        ("--find-links wheels\nmypkg\n", False),
        ("--find-links /abs/wheels\nmypkg\n", True),
    ):
        dir_a, req_a = make_task(paths, "a", text)
        dir_b, req_b = make_task(paths, "b", text)
        same = manager.key_for(req_a, task_dir=dir_a) == manager.key_for(req_b, task_dir=dir_b)
        assert same is shared, text


def test_included_requirements_files_are_hashed_by_content(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    task_dir, req = make_task(paths, "a", "-r more.txt\n")
    (task_dir / "more.txt").write_text("mypkg==1.0\n")
    first = manager.key_for(req, task_dir=task_dir)
    (task_dir / "more.txt").write_text("mypkg==2.0\n")
    assert manager.key_for(req, task_dir=task_dir) != first


def test_unknown_installer_is_a_config_error(paths: Paths) -> None:
    with pytest.raises(ConfigError, match="conda"):
        EnvManager(paths, installer="conda")


def test_a_base_python_that_cannot_run_is_reported_at_construction(paths: Paths, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    with pytest.raises(EnvBuildError, match=str(missing)):
        EnvManager(paths, base_python=missing)


# ---------------------------------------------------------------------------------------------------------
# Building and reusing envs (real virtualenv + uv / pip, offline)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_empty_requirements_give_a_working_python_without_an_installer_call(paths: Paths) -> None:
    runner = RecordingRunner()
    manager = EnvManager(paths, run=runner)
    task_dir, req = make_task(paths, "a", "# no dependencies\n")
    status = manager.ensure(task="a", requirements=req, task_dir=task_dir)
    assert status.ready and status.python == manager.python_for(status.key)
    assert runner.calls == []
    assert manager.is_ready(status.key)
    prefix = env_python_says(status.python, "import sys; print(sys.prefix)", cwd=task_dir)
    assert Path(prefix).resolve() == (paths.envs / status.key).resolve()
    marker = json.loads((paths.envs / status.key / MARKER_NAME).read_text())
    assert marker["key"] == status.key and marker["task"] == "a" and marker["installer"] == "uv"


@pytest.mark.timeout(180)
def test_conflicting_pins_get_separate_envs_each_with_its_version(paths: Paths, wheels: Path) -> None:
    runner = RecordingRunner()
    manager = EnvManager(paths, run=runner)
    dir_1, req_1 = make_task(paths, "one", pinned(wheels, "mypkg==1.0"))
    dir_2, req_2 = make_task(paths, "two", pinned(wheels, "mypkg==2.0"))
    first = manager.ensure(task="one", requirements=req_1, task_dir=dir_1)
    second = manager.ensure(task="two", requirements=req_2, task_dir=dir_2)
    assert first.key != second.key
    assert first.python is not None and second.python is not None
    assert mypkg_version(first.python, cwd=dir_1) == "1.0"
    assert mypkg_version(second.python, cwd=dir_2) == "2.0"
    assert len(runner.calls) == 2 and all("uv" in Path(argv[0]).name for argv in runner.calls)
    assert runner.cwds == [dir_1, dir_2]
    env = runner.envs[0]
    assert env["PIP_DISABLE_PIP_VERSION_CHECK"] == "1" and env["UV_OFFLINE"] == "1"  # inherited + set


@pytest.mark.timeout(180)
def test_identical_requirements_share_one_env(paths: Paths, wheels: Path) -> None:
    runner = RecordingRunner()
    manager = EnvManager(paths, run=runner)
    dir_1, req_1 = make_task(paths, "one", pinned(wheels, "mypkg==1.0"))
    dir_2, req_2 = make_task(paths, "two", "# same deps\n" + pinned(wheels, "mypkg==1.0"))
    first = manager.ensure(task="one", requirements=req_1, task_dir=dir_1)
    second = manager.ensure(task="two", requirements=req_2, task_dir=dir_2)
    assert first == second
    assert len(runner.calls) == 1
    assert sorted(p.name for p in paths.envs.iterdir() if p.is_dir()) == [first.key]


@pytest.mark.timeout(180)
def test_a_second_manager_reuses_a_ready_env_without_calling_the_installer(paths: Paths, wheels: Path) -> None:
    task_dir, req = make_task(paths, "a", pinned(wheels, "mypkg==1.0"))
    first_runner = RecordingRunner()
    built = EnvManager(paths, run=first_runner).ensure(task="a", requirements=req, task_dir=task_dir)
    assert len(first_runner.calls) == 1
    marker = paths.envs / built.key / MARKER_NAME
    stamp = marker.stat().st_mtime_ns

    second_runner = RecordingRunner()
    again = EnvManager(paths, run=second_runner).ensure(task="a", requirements=req, task_dir=task_dir)
    assert again == built
    assert second_runner.calls == []
    assert marker.stat().st_mtime_ns == stamp


@pytest.mark.timeout(180)
def test_a_missing_package_fails_with_the_reason_and_leaves_no_marker(paths: Paths, wheels: Path) -> None:
    manager = EnvManager(paths, run=RecordingRunner())
    task_dir, req = make_task(paths, "broken", pinned(wheels, "nosuchpkg==1.0"))
    key = manager.key_for(req, task_dir=task_dir)
    with pytest.raises(EnvBuildError) as caught:
        manager.ensure(task="broken", requirements=req, task_dir=task_dir)
    message = str(caught.value)
    assert "'broken'" in message and str(req) in message and "nosuchpkg" in message
    assert "Using Python" not in message  # only the reason, not the chatter
    assert "nosuchpkg" in caught.value.output  # type: ignore[attr-defined]
    assert not manager.is_ready(key)
    assert not (paths.envs / key / MARKER_NAME).exists()


@pytest.mark.timeout(180)
def test_the_pip_installer_builds_seeded_envs(paths: Paths, wheels: Path) -> None:
    runner = RecordingRunner()
    manager = EnvManager(paths, installer="pip", run=runner)
    task_dir, req = make_task(paths, "a", pinned(wheels, "mypkg==2.0"))
    status = manager.ensure(task="a", requirements=req, task_dir=task_dir)
    assert status.python is not None and mypkg_version(status.python, cwd=task_dir) == "2.0"
    assert runner.calls[0][:4] == [str(status.python), "-m", "pip", "install"]

    bad_dir, bad_req = make_task(paths, "bad", pinned(wheels, "nosuchpkg"))
    with pytest.raises(EnvBuildError, match=r"'bad'.*No matching distribution found for nosuchpkg"):
        manager.ensure(task="bad", requirements=bad_req, task_dir=bad_dir)


@pytest.mark.timeout(180)
def test_relative_find_links_and_editable_install_resolve_against_the_task_dir(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner())
    # Same requirements text in two folders, whose local wheel folders hold different versions.
    text = "--no-index\n--find-links wheels\nmypkg\n"
    dir_1, req_1 = make_task(paths, "one", text)
    dir_2, req_2 = make_task(paths, "two", text)
    build_wheel(dir_1 / "wheels", "mypkg", "1.0")
    build_wheel(dir_2 / "wheels", "mypkg", "2.0")
    first = manager.ensure(task="one", requirements=req_1, task_dir=dir_1)
    second = manager.ensure(task="two", requirements=req_2, task_dir=dir_2)
    assert first.key != second.key
    assert first.python is not None and second.python is not None
    assert mypkg_version(first.python, cwd=paths.home) == "1.0"
    assert mypkg_version(second.python, cwd=paths.home) == "2.0"

    # `-e .` installs the task folder itself (an in-tree PEP 517 backend: no network, no setuptools).
    editable_dir, editable_req = make_task(paths, "editable", "-e .\n")
    write_local_project(editable_dir)
    status = manager.ensure(task="editable", requirements=editable_req, task_dir=editable_dir)
    assert status.python is not None
    where = env_python_says(status.python, "import localpkg; print(localpkg.__file__)", cwd=paths.home)
    assert Path(where).resolve() == (editable_dir / "localpkg" / "__init__.py").resolve()


def write_local_project(folder: Path) -> None:
    """A project named localpkg whose build backend lives in the folder itself and builds editable wheels."""
    (folder / "localpkg").mkdir()
    (folder / "localpkg" / "__init__.py").write_text("__version__ = 'local'\n")
    (folder / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [build-system]
        requires = []
        build-backend = "tinybackend"
        backend-path = ["."]

        [project]
        name = "localpkg"
        version = "0.5"
        """)
    )
    (folder / "tinybackend.py").write_text(
        textwrap.dedent("""\
        import base64, hashlib, os, zipfile

        def _wheel(directory, files):
            info = "localpkg-0.5.dist-info"
            files = dict(files)
            files[info + "/METADATA"] = b"Metadata-Version: 2.1\\nName: localpkg\\nVersion: 0.5\\n"
            files[info + "/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
            lines = []
            for name, data in files.items():
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                lines.append(f"{name},sha256={digest},{len(data)}")
            files[info + "/RECORD"] = ("\\n".join(lines + [info + "/RECORD,,"]) + "\\n").encode()
            filename = "localpkg-0.5-py3-none-any.whl"
            with zipfile.ZipFile(os.path.join(directory, filename), "w") as archive:
                for name, data in files.items():
                    archive.writestr(name, data)
            return filename

        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            with open(os.path.join("localpkg", "__init__.py"), "rb") as handle:
                return _wheel(wheel_directory, {"localpkg/__init__.py": handle.read()})

        def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
            return _wheel(wheel_directory, {"localpkg_editable.pth": (os.path.abspath(".") + "\\n").encode()})
        """)
    )


@pytest.mark.timeout(180)
def test_a_half_built_folder_is_wiped_and_rebuilt(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    task_dir, req = make_task(paths, "a", "")
    key = manager.key_for(req, task_dir=task_dir)
    leftover = paths.envs / key
    leftover.mkdir(parents=True)
    (leftover / "junk-from-a-killed-build").write_text("x")
    (leftover / MARKER_NAME).write_text(json.dumps({"key": "0" * 16}))  # a marker for another key
    assert not manager.is_ready(key)
    manager.ensure(task="a", requirements=req, task_dir=task_dir)
    assert manager.is_ready(key)
    assert not (leftover / "junk-from-a-killed-build").exists()


@pytest.mark.timeout(180)
def test_requirements_changed_during_the_install_build_the_new_content(paths: Paths) -> None:
    task_dir, req = make_task(paths, "a", "mypkg==1.0\n")

    class EditingRunner(RecordingRunner):
        def __call__(self, argv: Sequence[str], **kwargs: object) -> InstallerRun:  # type: ignore[override]
            if not self.calls:
                req.write_text("mypkg==2.0\n")  # the user saves a new pin mid-install
            return super().__call__(argv, **kwargs)  # type: ignore[arg-type]

    runner = EditingRunner(real=False)
    manager = EnvManager(paths, run=runner)
    old_key = manager.key_for(req, task_dir=task_dir)
    status = manager.ensure(task="a", requirements=req, task_dir=task_dir)
    assert status.key == manager.key_for(req, task_dir=task_dir) != old_key
    assert len(runner.calls) == 2
    assert not (paths.envs / old_key).exists()


def test_installer_timeout_kills_the_whole_group_and_reports_it(tmp_path: Path) -> None:
    grandchild = "import time; time.sleep(60)"
    script = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); "
        "print('started', flush=True); time.sleep(60)"
    )
    result = run_installer([sys.executable, "-c", script], cwd=tmp_path, env=os.environ, timeout=1.0)
    assert result.timed_out and result.returncode is None
    assert "started" in result.output
    # The autouse fixture fails this test if the grandchild outlived the kill.


@pytest.mark.timeout(180)
def test_a_timed_out_install_is_an_env_build_error(paths: Paths) -> None:
    def slow(
        argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, pass_fds: Sequence[int] = ()
    ) -> InstallerRun:
        assert timeout == 5.0
        return InstallerRun(None, "Resolving mypkg...\n", timed_out=True)

    manager = EnvManager(paths, run=slow, install_timeout_s=5.0)
    task_dir, req = make_task(paths, "slowtask", "mypkg\n")
    with pytest.raises(EnvBuildError, match=r"'slowtask'.*timed out after 5 s"):
        manager.ensure(task="slowtask", requirements=req, task_dir=task_dir)
    assert not manager.is_ready(manager.key_for(req, task_dir=task_dir))


# ---------------------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------------------


class GatedRunner(RecordingRunner):
    """Fake installer that holds the first install open until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(real=False)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lock_held_during_install: bool | None = None
        self.lock_path: Path | None = None

    def __call__(self, argv: Sequence[str], **kwargs: object) -> InstallerRun:  # type: ignore[override]
        if self.lock_path is not None:  # is the key's file lock really held while installing?
            with open(self.lock_path) as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self.lock_held_during_install = False
                except BlockingIOError:
                    self.lock_held_during_install = True
        self.entered.set()
        assert self.release.wait(60)
        return super().__call__(argv, **kwargs)  # type: ignore[arg-type]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("managers", ["one manager (thread lock)", "two managers (file lock)"])
def test_concurrent_ensure_of_one_key_builds_once(paths: Paths, managers: str) -> None:
    handler = ListHandler()
    logger = logging.getLogger(f"test-envs-{managers}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    runner = GatedRunner()
    first = EnvManager(paths, run=runner, logger=logger)
    second = first if managers.startswith("one") else EnvManager(paths, run=runner, logger=logger)
    task_dir, req = make_task(paths, "a", "mypkg==1.0\n")
    runner.lock_path = paths.envs / f"{first.key_for(req, task_dir=task_dir)}.lock"
    results: dict[str, object] = {}

    def build(name: str, manager: EnvManager) -> None:
        try:
            results[name] = manager.ensure(task=name, requirements=req, task_dir=task_dir)
        except BaseException as exc:  # surfaced by the asserts below
            results[name] = exc

    threads = [threading.Thread(target=build, args=("A", first))]
    threads[0].start()
    try:
        assert runner.entered.wait(60), "first build never reached the installer"
        threads.append(threading.Thread(target=build, args=("B", second)))
        threads[1].start()
        wait_for(
            lambda: any("task B waits" in m for m in handler.messages),
            timeout=30,
            what="the second builder to wait for the first",
        )
    finally:
        runner.release.set()
        for thread in threads:
            thread.join(60)
        logger.removeHandler(handler)
    assert results["A"] == results["B"]
    assert len(runner.calls) == 1
    assert runner.lock_held_during_install is True
    assert runner.pass_fds[0], "the installer must inherit the key's lock"


# ---------------------------------------------------------------------------------------------------------
# Garbage collection
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_gc_removes_unreferenced_envs_only(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    dir_a, req_a = make_task(paths, "a", "")
    dir_b, req_b = make_task(paths, "b", "mypkg==1.0\n")
    dir_c, req_c = make_task(paths, "c", "mypkg==2.0\n")
    kept = manager.ensure(task="a", requirements=req_a, task_dir=dir_a).key
    dropped = manager.ensure(task="b", requirements=req_b, task_dir=dir_b).key
    busy = manager.key_for(req_c, task_dir=dir_c)
    (paths.envs / "README.txt").write_text("not an env")
    (paths.envs / "notakey").mkdir()
    (paths.envs / "abcdef0123456789.lock").write_text("")  # a stale lock without an env
    busy_lock = open(paths.envs / f"{busy}.lock", "w")  # a build of `busy` in progress elsewhere
    (paths.envs / busy).mkdir()
    fcntl.flock(busy_lock, fcntl.LOCK_EX)
    try:
        removed = manager.gc([kept])
    finally:
        busy_lock.close()
    assert sorted(removed) == sorted([dropped, "abcdef0123456789"])
    assert manager.is_ready(kept)
    assert not (paths.envs / dropped).exists() and not (paths.envs / f"{dropped}.lock").exists()
    assert (paths.envs / busy).is_dir()
    assert (paths.envs / "README.txt").exists() and (paths.envs / "notakey").is_dir()
    assert manager.gc([kept]) == [busy]  # collected once its builder is gone
    assert manager.gc([kept]) == []


@pytest.mark.timeout(180)
def test_a_builder_after_gc_still_locks_properly(paths: Paths) -> None:
    manager = EnvManager(paths, run=RecordingRunner(real=False))
    task_dir, req = make_task(paths, "a", "mypkg==1.0\n")
    key = manager.ensure(task="a", requirements=req, task_dir=task_dir).key
    assert manager.gc([]) == [key]
    assert not manager.is_ready(key)
    status = manager.ensure(task="a", requirements=req, task_dir=task_dir)
    assert status.key == key and manager.is_ready(key)
    assert (paths.envs / f"{key}.lock").exists()


# ---------------------------------------------------------------------------------------------------------
# Hardening: transient failures, hostile requirements files
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_an_installer_killed_by_a_signal_is_transient_and_names_the_signal(paths: Paths) -> None:
    """The real installer process is replaced by one that is really SIGKILLed (as the OOM killer would)."""

    def killed(
        argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, pass_fds: Sequence[int] = ()
    ) -> InstallerRun:
        return run_installer(
            ["sh", "-c", "echo Resolving mypkg; kill -9 $$"], cwd=cwd, env=env, timeout=timeout, pass_fds=pass_fds
        )

    manager = EnvManager(paths, run=killed)
    task_dir, req = make_task(paths, "oom", "mypkg\n")
    with pytest.raises(EnvBuildError, match=r"'oom'.*installer killed by SIGKILL") as caught:
        manager.ensure(task="oom", requirements=req, task_dir=task_dir)
    assert caught.value.transient is True


@pytest.mark.timeout(180)
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_an_unreachable_index_is_transient(paths: Paths, installer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installer against an index on a closed port of 127.0.0.1 (no network leaves the machine)."""
    import socket

    monkeypatch.delenv("UV_OFFLINE", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip reports a refused connection only when it retries
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = EnvManager(paths, installer=installer)
    task_dir, req = make_task(paths, "offline", f"--index-url http://127.0.0.1:{port}/simple\nmypkg\n")
    with pytest.raises(EnvBuildError) as caught:
        manager.ensure(task="offline", requirements=req, task_dir=task_dir)
    assert caught.value.transient is True, str(caught.value) + caught.value.output
    assert "will retry" in str(caught.value)


def test_a_missing_package_is_not_transient(paths: Paths) -> None:
    def missing(
        argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, pass_fds: Sequence[int] = ()
    ) -> InstallerRun:
        return InstallerRun(1, "ERROR: No matching distribution found for nosuchpkg\n")

    manager = EnvManager(paths, run=missing)
    task_dir, req = make_task(paths, "typo", "nosuchpkg\n")
    with pytest.raises(EnvBuildError) as caught:
        manager.ensure(task="typo", requirements=req, task_dir=task_dir)
    assert caught.value.transient is False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["directory", "fifo", "bad-encoding"])
def test_a_hostile_requirements_file_has_a_key_and_fails_the_build_with_its_cause(paths: Paths, kind: str) -> None:
    task_dir, req = make_task(paths, "hostile", None)
    if kind == "directory":
        req.mkdir()
    elif kind == "fifo":
        os.mkfifo(req)
    else:
        req.write_bytes(b"mypkg\ncaf\xe9\n")
    runner = RecordingRunner(real=False)
    manager = EnvManager(paths, run=runner)
    key = manager.key_for(req, task_dir=task_dir)  # never raises, never blocks
    assert key == manager.key_for(req, task_dir=task_dir)
    expected = {"directory": "is a directory", "fifo": "is a FIFO", "bad-encoding": "line 2: not valid UTF-8"}[kind]
    with pytest.raises(EnvBuildError, match=rf"task 'hostile': .*requirements\.txt: {expected}"):
        manager.ensure(task="hostile", requirements=req, task_dir=task_dir)
    assert runner.calls == [] and not (paths.envs / key).exists()
