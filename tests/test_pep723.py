"""PEP 723 tasks: a '# /// script' block in main.py instead of requirements.txt, built with a local wheel."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from tests.support.helpers import build_wheel

from supervisor.envs.manager import EnvManager
from supervisor.envs.pep723 import ScriptMetadata, check_requires_python, parse_script_metadata
from supervisor.errors import ConfigError
from supervisor.paths import Paths

pytestmark = pytest.mark.timeout(120)


def _main(deps: str, *, requires: str | None = None, body: str = "def main():\n    return 'ok'\n") -> str:
    lines = ["# /// script", f"# dependencies = [{deps}]"]
    if requires is not None:
        lines.append(f'# requires-python = "{requires}"')
    return "\n".join(["#!/usr/bin/env python3", *lines, "# ///", "", body])


def test_parse_block_dependencies_and_requires_python(tmp_path: Path) -> None:
    source = _main('"mypkg==1.0", "other>=2 ; python_version >= \'3.8\'"', requires=">=3.9")
    meta = parse_script_metadata(source, where=tmp_path / "main.py", task="t")
    assert meta == ScriptMetadata(
        dependencies=("mypkg==1.0", "other>=2 ; python_version >= '3.8'"), requires_python=">=3.9"
    )
    assert parse_script_metadata("def main():\n    pass\n", where=tmp_path, task="t") is None
    # Other block types are not ours.
    assert parse_script_metadata("# /// pyproject\n# x = 1\n# ///\n", where=tmp_path, task="t") is None


@pytest.mark.parametrize(
    "block, message",
    [
        ('# /// script\n# dependencies = "mypkg"\n# ///\n', "dependencies = 'mypkg': must be a list of strings"),
        ('# /// script\n# dependencies = ["not a req!!"]\n# ///\n', "dependencies = 'not a req!!': not a valid"),
        ('# /// script\n# requires-python = "3.x?"\n# ///\n', "requires-python = '3.x?': not a version specifier"),
        ("# /// script\n# dependencies = [\n# ///\n", "not valid TOML"),
        ("# /// script\n# x = 1\n# ///\n\n# /// script\n# y = 2\n# ///\n", "more than one '# /// script' block"),
    ],
)
def test_invalid_blocks_name_task_file_key_and_value(tmp_path: Path, block: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_script_metadata(block, where=tmp_path / "main.py", task="t")
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"task 't': {tmp_path / 'main.py'}")


def test_requires_python_check(tmp_path: Path) -> None:
    meta = ScriptMetadata(requires_python=">=3.12")
    check_requires_python(meta, python_version="3.12.1", python=Path("/py"), where=tmp_path, task="t")
    with pytest.raises(
        ConfigError,
        match=r"requires-python = '>=3.12': not met by the base interpreter /py "
        r"\(Python 3.11.7\)",
    ):
        check_requires_python(meta, python_version="3.11.7", python=Path("/py"), where=tmp_path, task="t")


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A find-links folder with mypkg 1.0 and 2.0; the installers are pointed at it by their environment
    variables (a PEP 723 block holds requirements only, no installer options)."""
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "mypkg", "1.0")
    build_wheel(wheels, "mypkg", "2.0")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    for name, value in (
        ("UV_FIND_LINKS", str(wheels)),
        ("UV_NO_INDEX", "1"),
        ("PIP_FIND_LINKS", str(wheels)),
        ("PIP_NO_INDEX", "1"),
    ):
        monkeypatch.setenv(name, value)
    return wheels


def _task(home: Path, name: str, main_source: str, requirements: str | None = None) -> Path:
    folder = home / "Tasks" / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(main_source)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def _version_in(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import mypkg; print(mypkg.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def test_a_script_block_without_requirements_gets_its_dependencies(home: Path, local_index: Path) -> None:
    paths = Paths(home)
    manager = EnvManager(paths)
    one = _task(home, "one", _main('"mypkg==1.0"'))
    two = _task(home, "two", _main('"mypkg==2.0"'))
    plain = _task(home, "plain", "def main():\n    pass\n")
    keys = {t.name: manager.key_for(t / "requirements.txt", task_dir=t) for t in (one, two, plain)}
    assert len(set(keys.values())) == 3  # the block's dependencies are part of the key
    status = manager.ensure(task="one", requirements=one / "requirements.txt", task_dir=one)
    assert status.key == keys["one"] and _version_in(status.python) == "1.0"
    status = manager.ensure(task="two", requirements=two / "requirements.txt", task_dir=two)
    assert _version_in(status.python) == "2.0"
    # An edited block is a new key (the loop sees main.py's change and asks again).
    (one / "main.py").write_text(_main('"mypkg==2.0"'))
    assert manager.key_for(one / "requirements.txt", task_dir=one) == keys["two"]


def test_a_direct_file_url_dependency_needs_no_environment(
    home: Path, local_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name)
    wheel = (local_index / "mypkg-1.0-py3-none-any.whl").as_uri()
    task = _task(home, "direct", _main(f'"mypkg @ {wheel}"'))
    status = EnvManager(Paths(home)).ensure(task="direct", requirements=task / "requirements.txt", task_dir=task)
    assert _version_in(status.python) == "1.0"


def test_block_and_requirements_txt_is_an_error_naming_both(home: Path) -> None:
    task = _task(home, "both", _main('"mypkg"'), requirements="mypkg\n")
    with pytest.raises(ConfigError) as caught:
        EnvManager(Paths(home)).key_for(task / "requirements.txt", task_dir=task)
    assert str(task / "requirements.txt") in str(caught.value) and str(task / "main.py") in str(caught.value)


def test_unmet_requires_python_is_a_clear_error_before_any_build(home: Path) -> None:
    task = _task(home, "future", _main('"mypkg"', requires=">=4.0"))
    manager = EnvManager(Paths(home))
    with pytest.raises(ConfigError, match="requires-python = '>=4.0': not met by the base interpreter"):
        manager.ensure(task="future", requirements=task / "requirements.txt", task_dir=task)
    assert not any((home / "envs").glob("*/bin"))


def test_a_block_with_no_dependencies_builds_a_bare_env(home: Path) -> None:
    task = _task(
        home,
        "bare",
        textwrap.dedent("""\
        # /// script
        # requires-python = ">=3.8"
        # ///
        def main():
            return "x"
        """),
    )
    status = EnvManager(Paths(home)).ensure(task="bare", requirements=task / "requirements.txt", task_dir=task)
    assert status.ready and status.python.exists()


def test_validate_reports_block_problems(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from supervisor.cli.entry import main as cli_main

    config = "[Frequency]\nEveryXMinutes = 5\n"
    for name, source, requirements in (
        ("good", _main('"mypkg"'), None),
        ("both", _main('"mypkg"'), "mypkg\n"),
        ("future", _main("", requires=">=4"), None),
    ):
        _task(home, name, source, requirements)
        (home / "Tasks" / name / "config.ini").write_text(config)
    assert cli_main(["validate", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert "ok    good" in out
    assert f"both {home / 'Tasks/both/requirements.txt'} and a '# /// script' block" in out
    assert "requires-python = '>=4': not met" in out


def _live_status(running) -> dict:  # type: ignore[no-untyped-def]
    """The loop's status from its latest snapshot (safe from any thread, as the control socket reads it)."""
    return running.supervisor.status()


def test_a_supervisor_runs_a_pep723_task_and_reports_a_conflicting_one(home: Path, local_index: Path) -> None:
    from tests.support.harness import InProcessSupervisor
    from tests.support.helpers import wait_for

    config = "[Frequency]\nEveryXMinutes = 60\n"
    body = (
        "import os\nimport mypkg\n\ndef main():\n    out = os.environ['TASK_OUTPUT_DIR']\n"
        "    os.makedirs(out, exist_ok=True)\n"
        "    open(os.path.join(out, 'v.txt'), 'w').write(mypkg.__version__)\n    return 'ok'\n"
    )
    good = _task(home, "inline", _main('"mypkg==2.0"', body=body))
    (good / "config.ini").write_text(config)
    both = _task(home, "both", _main('"mypkg"', body=body), requirements="mypkg==1.0\n")
    (both / "config.ini").write_text(config)
    with InProcessSupervisor(home) as running:
        wait_for(
            lambda: (good / "Output" / "v.txt").exists(),
            timeout=60,
            what="the PEP 723 task's run\n" + running.log()[-2000:],
        )
        assert (good / "Output" / "v.txt").read_text() == "2.0"
        row = wait_for(
            lambda: next(
                (t for t in _live_status(running)["tasks"] if t["name"] == "both" and t["state"] == "error"), None
            ),
            timeout=30,
            what="the conflicting task in error",
        )
        assert "both" in row["error"] and "requirements.txt" in row["error"] and "main.py" in row["error"]
