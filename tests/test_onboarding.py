"""A home anywhere (``init``) and shell completion (``completion bash|zsh|fish``), driven through the console
script ``taskautomation`` and real shells: bash's completion function, fish's ``complete -C``, zsh's
``compinit`` and the protocol its script speaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config.schema import _HOME_SCHEMA, parse_home_config
from supervisor.model import HomeConfig
from tests.support.helpers import write_task

BIN = Path(sys.executable).parent
SCRIPT = BIN / "taskautomation"

pytestmark = pytest.mark.timeout(120)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TASKAUTOMATION_HOME"}
    return {**env, "PATH": f"{BIN}:{env['PATH']}", **extra}


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env or _env(), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
    )


def test_init_makes_a_home_anywhere_and_says_what_to_run_next(tmp_path: Path) -> None:
    result = _run([str(SCRIPT), "init", "deep/ta"], cwd=tmp_path)
    home = (tmp_path / "deep" / "ta").resolve()
    assert result.returncode == 0, result.stderr
    assert f"taskautomation import-crontab --home {home}" in result.stdout
    assert f"taskautomation run --home {home}" in result.stdout
    assert (home / "Tasks" / "example" / "main.py").is_file()
    assert "Enabled = False" in (home / "Tasks" / "example" / "config.ini").read_text()
    ini = (home / "taskautomation.ini").read_text()
    config, warnings = parse_home_config(ini, path=home / "taskautomation.ini")
    assert warnings == () and config.limits == HomeConfig().limits and config.keep_runs == HomeConfig().keep_runs
    for section, keys in _HOME_SCHEMA.items():
        assert f"[{section}]" in ini
        for key in keys:
            assert f"\n; {key} = " in ini, f"[{section}] {key} is not documented in init's taskautomation.ini"
    checked = _run([str(SCRIPT), "validate"], cwd=home)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (home / "taskautomation.ini").write_text("[Supervisor]\nKeepRuns = 5\n")
    again = _run([str(SCRIPT), "init"], cwd=home)
    assert again.returncode == 0 and again.stdout.count("left as it is") == 2
    assert (home / "taskautomation.ini").read_text() == "[Supervisor]\nKeepRuns = 5\n"
    assert again.stdout.splitlines()[2] == "next:" and " --home" not in again.stdout


def test_init_takes_the_home_from_the_environment_and_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "from-env"
    result = _run([str(SCRIPT), "init"], cwd=tmp_path, env=_env(TASKAUTOMATION_HOME=str(target)))
    assert result.returncode == 0 and (target / "Tasks").is_dir()
    (tmp_path / "file").write_text("")
    refused = _run([str(SCRIPT), "init", "file"], cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().endswith("exists and is not a folder")


def _home_with_tasks(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for name in ("backup", "backup_db", "report"):
        write_task(home / "Tasks", name)
    (home / "Tasks" / ".hidden").mkdir()
    return home


_BASH_COMPLETE = """
source <(taskautomation completion bash)
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_python_argcomplete taskautomation "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\\n' "${COMPREPLY[@]}"
"""


def _bash(line: str, *, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    result = _run(["bash", "-c", _BASH_COMPLETE, "complete", line], cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return sorted(word.strip() for word in result.stdout.splitlines() if word.strip())


def test_bash_completes_commands_options_and_the_task_names_of_the_home(tmp_path: Path) -> None:
    home = _home_with_tasks(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _bash("taskautomation st", cwd=elsewhere) == ["status", "stop"]
    assert _bash("taskautomation import-crontab --d", cwd=elsewhere) == ["--dry-run"]
    assert _bash("taskautomation completion ", cwd=elsewhere) == ["bash", "fish", "zsh"]
    assert _bash(f"taskautomation run-now --home {home} ", cwd=elsewhere) == ["backup", "backup_db", "report"]
    assert _bash("taskautomation logs back", cwd=home) == ["backup", "backup_db"]  # the current folder's home
    from_env = _env(TASKAUTOMATION_HOME=str(home))
    assert _bash("taskautomation next r", cwd=elsewhere, env=from_env) == ["report"]
    assert _bash("taskautomation history ", cwd=elsewhere) == []  # no home: no names, and no error


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is in .ci/system-packages.txt")
def test_fish_completes_through_its_own_complete_command(tmp_path: Path) -> None:
    home = _home_with_tasks(tmp_path)
    script = "taskautomation completion fish | source; complete -C $argv[1]"
    result = _run(["fish", "--no-config", "-c", script, f"taskautomation pause --home {home} back"], cwd=tmp_path)
    assert sorted(result.stdout.split()) == ["backup", "backup_db"], result.stderr
    commands = _run(["fish", "--no-config", "-c", script, "taskautomation i"], cwd=tmp_path).stdout
    assert sorted(line.split("\t")[0] for line in commands.splitlines()) == [
        "import-crontab",
        "init",
        "install-systemd",
    ]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is in .ci/system-packages.txt")
def test_zsh_registers_the_script_and_gets_task_names(tmp_path: Path) -> None:
    home = _home_with_tasks(tmp_path)
    registered = _run(
        [
            "zsh",
            "-fc",
            f"autoload -Uz compinit && compinit -u -d {tmp_path}/zcompdump && "
            "source <(taskautomation completion zsh) && print -r -- $_comps[taskautomation]",
        ],
        cwd=tmp_path,
    )
    assert registered.stdout.strip() == "_python_argcomplete", registered.stderr
    # What the zsh script asks the program on Tab (its environment, answer on fd 8), as zsh would ask it.
    line = f"taskautomation resume --home {home} rep"
    asked = subprocess.run(
        f"{SCRIPT} 8>&1 9>&2 1>/dev/null 2>&1",
        shell=True,
        cwd=tmp_path,
        env=_env(COMP_LINE=line, COMP_POINT=str(len(line)), _ARGCOMPLETE="1", _ARGCOMPLETE_SHELL="zsh"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [item.split(":")[0].strip() for item in asked.stdout.split("\v") if item] == ["report"]


def test_completion_needs_a_known_shell(tmp_path: Path) -> None:
    result = _run([str(SCRIPT), "completion", "tcsh"], cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'tcsh'" in result.stderr
