"""Scanning real task folders, diffing scans, and the static check of main.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.support.helpers import write_task

from supervisor.discovery.scan import TaskDiff, TaskFolder, check_task_source, diff_tasks, scan_tasks
from supervisor.errors import TaskLoadError

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


@pytest.fixture
def tasks(home: Path) -> Path:
    return home / "Tasks"


def rescan_diff(tasks: Path, before: dict[str, TaskFolder]) -> TaskDiff:
    return diff_tasks(before, scan_tasks(tasks))


# --- scanning ----------------------------------------------------------------------------------------


def test_missing_tasks_folder_holds_no_tasks(tmp_path):
    assert scan_tasks(tmp_path / "Tasks") == {}


def test_tasks_path_that_is_not_a_folder_is_an_error(tmp_path):
    not_a_folder = tmp_path / "Tasks"
    not_a_folder.write_text("oops")
    with pytest.raises(TaskLoadError, match="cannot list task folders"):
        scan_tasks(not_a_folder)


def test_scan_reports_hashes_of_each_file(tasks):
    folder = write_task(tasks, "alpha", config="[Frequency]\nEveryXMinutes = 5\n", requirements="six\n")
    found = scan_tasks(tasks)
    assert list(found) == ["alpha"]
    task = found["alpha"]
    assert task.name == "alpha" and task.path == folder
    assert task.config_hash == hashlib.sha256((folder / "config.ini").read_bytes()).hexdigest()
    assert task.requirements_hash == hashlib.sha256(b"six\n").hexdigest()
    assert task.code_hash is not None and len(task.code_hash) == 64
    assert task.missing == ()


def test_scan_skips_files_hidden_folders_and_pycache(tasks):
    write_task(tasks, "real")
    (tasks / ".hidden").mkdir()
    (tasks / "__pycache__").mkdir()
    (tasks / "README.txt").write_text("not a task")
    (tasks / "__init__.py").write_text("")
    assert list(scan_tasks(tasks)) == ["real"]


def test_incomplete_folders_are_reported_with_missing_hashes(tasks):
    (tasks / "empty").mkdir()
    write_task(tasks, "no_config")
    (tasks / "no_config" / "config.ini").unlink()
    write_task(tasks, "no_main")
    (tasks / "no_main" / "main.py").unlink()
    (tasks / "no_main" / "helper.py").write_text("x = 1\n")
    write_task(tasks, "no_requirements")
    (tasks / "no_requirements" / "requirements.txt").unlink()
    found = scan_tasks(tasks)
    assert found["empty"].config_hash is None and found["empty"].code_hash is None
    assert found["empty"].requirements_hash == EMPTY_SHA
    assert found["no_config"].config_hash is None and found["no_config"].code_hash is not None
    assert found["no_main"].code_hash is None and found["no_main"].config_hash is not None
    assert found["no_requirements"].requirements_hash == EMPTY_SHA
    assert found["empty"].missing == ("main.py", "config.ini") and found["no_main"].missing == ("main.py",)
    assert found["no_requirements"].missing == ()


def test_names_with_spaces_and_non_ascii_work(tasks):
    write_task(tasks, "my task")
    write_task(tasks, "Größe 📈")
    found = scan_tasks(tasks)
    assert set(found) == {"my task", "Größe 📈"}
    assert found["Größe 📈"].path == tasks / "Größe 📈"
    assert found["Größe 📈"].code_hash is not None


def test_unreadable_files_do_not_raise_and_hash_stably(tasks):
    folder = write_task(tasks, "odd")
    (folder / "config.ini").unlink()
    (folder / "config.ini").mkdir()  # exists but cannot be read as a file
    (folder / "dangling.py").symlink_to(folder / "nowhere.py")
    first = scan_tasks(tasks)["odd"]
    assert first.config_hash == "unsafe:directory"
    assert first.code_hash is not None
    # The same unreadable state scanned again is not a change (it must not re-trigger every rescan) ...
    assert diff_tasks({"odd": first}, scan_tasks(tasks)).empty
    # ... but it is a change from the readable state, so loading it reports the real cause.
    (folder / "nowhere.py").write_text("x = 1\n")
    assert rescan_diff(tasks, {"odd": first}).code_changed == ("odd",)


# --- diffing -------------------------------------------------------------------------------------------


def test_identical_scans_diff_empty(tasks):
    write_task(tasks, "a")
    write_task(tasks, "b")
    diff = diff_tasks(scan_tasks(tasks), scan_tasks(tasks))
    assert diff.empty and diff == TaskDiff()


def test_added_and_removed(tasks):
    write_task(tasks, "stays")
    write_task(tasks, "goes")
    before = scan_tasks(tasks)
    for path in sorted((tasks / "goes").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tasks / "goes").rmdir()
    write_task(tasks, "new")
    diff = rescan_diff(tasks, before)
    assert (diff.added, diff.removed) == (("new",), ("goes",))
    assert diff.config_changed == diff.code_changed == diff.requirements_changed == ()
    assert not diff.empty


@pytest.mark.parametrize(
    "filename, field",
    [
        ("config.ini", "config_changed"),
        ("main.py", "code_changed"),
        ("requirements.txt", "requirements_changed"),
    ],
)
def test_each_file_change_is_classified(tasks, filename, field):
    write_task(tasks, "t")
    write_task(tasks, "other")
    before = scan_tasks(tasks)
    with open(tasks / "t" / filename, "a") as handle:
        handle.write("\n# edited\n")
    diff = rescan_diff(tasks, before)
    changed = {
        name: getattr(diff, name)
        for name in ("added", "removed", "config_changed", "code_changed", "requirements_changed")
    }
    assert changed == {name: (("t",) if name == field else ()) for name in changed}


def test_helper_modules_are_code(tasks):
    write_task(tasks, "t", extra={"helper.py": "X = 1\n"})
    before = scan_tasks(tasks)
    (tasks / "t" / "helper.py").write_text("X = 2\n")
    assert rescan_diff(tasks, before).code_changed == ("t",)
    before = scan_tasks(tasks)
    (tasks / "t" / "pkg").mkdir()
    (tasks / "t" / "pkg" / "__init__.py").write_text("")
    assert rescan_diff(tasks, before).code_changed == ("t",)
    before = scan_tasks(tasks)
    (tasks / "t" / "helper.py").rename(tasks / "t" / "helper2.py")
    assert rescan_diff(tasks, before).code_changed == ("t",)


def test_output_caches_swap_files_and_venvs_do_not_change_hashes(tasks):
    folder = write_task(tasks, "t", extra={"helper.py": "X = 1\n"})
    (folder / "sub").mkdir()
    (folder / "sub" / "mod.py").write_text("Y = 1\n")
    before = scan_tasks(tasks)
    (folder / "Output" / "result.py").write_text("generated = True\n")
    (folder / "Output" / "data.csv").write_text("1,2\n")
    for cache in (folder / "__pycache__", folder / "sub" / "__pycache__"):
        cache.mkdir()
        (cache / "main.cpython-311.pyc").write_bytes(b"\0\0")
        (cache / "stray.py").write_text("")
    for temp in (".main.py.swp", ".#main.py", "main.py~", "4913", "main.py.tmp", "notes.txt"):
        (folder / temp).write_text("temp")
    (folder / ".hidden.py").write_text("hidden = 1\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "hook.py").write_text("")
    (folder / "venv" / "lib").mkdir(parents=True)
    (folder / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (folder / "venv" / "lib" / "site.py").write_text("")
    assert rescan_diff(tasks, before).empty


def test_a_nested_folder_named_output_is_still_code(tasks):
    folder = write_task(tasks, "t")
    (folder / "pkg" / "Output").mkdir(parents=True)
    before = scan_tasks(tasks)
    (folder / "pkg" / "Output" / "fmt.py").write_text("def fmt(): pass\n")
    assert rescan_diff(tasks, before).code_changed == ("t",)


def test_fingerprint_follows_every_file(tasks):
    folder = write_task(tasks, "t")
    prints = {scan_tasks(tasks)["t"].fingerprint}
    for filename in ("config.ini", "main.py", "requirements.txt"):
        with open(folder / filename, "a") as handle:
            handle.write("\n#x\n")
        prints.add(scan_tasks(tasks)["t"].fingerprint)
    assert len(prints) == 4
    assert scan_tasks(tasks)["t"].fingerprint == scan_tasks(tasks)["t"].fingerprint


def test_diff_is_pure_on_hand_made_scans():
    def folder(name: str, config: str | None = "c", code: str | None = "m", reqs: str = "r") -> TaskFolder:
        return TaskFolder(name=name, path=Path("/T") / name, config_hash=config, code_hash=code, requirements_hash=reqs)

    old = {"a": folder("a"), "b": folder("b"), "c": folder("c", code=None)}
    new = {"b": folder("b", config=None, reqs="r2"), "c": folder("c"), "z": folder("z")}
    assert diff_tasks(old, new) == TaskDiff(
        added=("z",), removed=("a",), config_changed=("b",), code_changed=("c",), requirements_changed=("b",)
    )


# --- check_task_source -------------------------------------------------------------------------------


def test_valid_task_source_passes(tasks):
    folder = write_task(tasks, "ok")
    check_task_source(folder, task="ok")
    check_task_source(folder / "main.py", task="ok")


def test_missing_initialize_is_not_an_error(tasks):
    check_task_source(write_task(tasks, "t", initialize=None), task="t")


def test_source_is_not_executed(tasks, tmp_path):
    marker = tmp_path / "executed"
    folder = write_task(tasks, "t", main=f"open({str(marker)!r}, 'w').close()\ndef main():\n    pass\n")
    check_task_source(folder, task="t")
    assert not marker.exists()


def test_syntax_error_names_task_file_line_and_message(tasks):
    folder = write_task(tasks, "bad", main="def main():\n    return 'x'\n\nif True\n    pass\n")
    with pytest.raises(TaskLoadError) as caught:
        check_task_source(folder, task="bad")
    message = str(caught.value)
    assert message.startswith(f"task 'bad': {folder / 'main.py'}: line 4: ")
    assert "expected ':'" in message


def test_compile_time_errors_are_caught_too(tasks):
    folder = write_task(tasks, "bad", main="def main():\n    pass\nreturn 5\n")
    with pytest.raises(TaskLoadError, match=r"main\.py: line 3: 'return' outside function"):
        check_task_source(folder, task="bad")


def test_null_bytes_are_an_error_not_a_crash(tasks):
    folder = write_task(tasks, "bad")
    (folder / "main.py").write_bytes(b"def main():\n    return '\0'\n")
    with pytest.raises(TaskLoadError, match=r"task 'bad': .*main\.py: "):
        check_task_source(folder, task="bad")


def test_missing_main_function_is_an_error(tasks):
    folder = write_task(tasks, "nomain", main="def helper():\n    def main():\n        pass\n")
    with pytest.raises(TaskLoadError) as caught:
        check_task_source(folder, task="nomain")
    assert str(caught.value) == f"task 'nomain': {folder / 'main.py'}: no function main() defined"


def test_main_as_a_class_method_does_not_count(tasks):
    folder = write_task(tasks, "t", main="class Job:\n    def main(self):\n        pass\n")
    with pytest.raises(TaskLoadError, match="no function main"):
        check_task_source(folder, task="t")


@pytest.mark.parametrize(
    "source",
    [
        "from os.path import join as main\n",
        "import json as main\n",
        "def _run():\n    pass\nmain = _run\n",
        "try:\n    import fastjob\n    def main():\n        pass\nexcept ImportError:\n    def main():\n        pass\n",
        "import sys\nif sys.platform:\n    def main():\n        pass\n",
    ],
)
def test_main_bound_at_module_level_in_other_ways_counts(tasks, source):
    check_task_source(write_task(tasks, "t", main=source), task="t")


def test_async_main_is_refused(tasks):
    folder = write_task(tasks, "t", main="async def main():\n    return 'never awaited'\n")
    with pytest.raises(TaskLoadError, match=r"line 1: main\(\) is 'async def'"):
        check_task_source(folder, task="t")


def test_missing_main_py_is_an_error(tasks):
    folder = write_task(tasks, "t")
    (folder / "main.py").unlink()
    with pytest.raises(TaskLoadError, match=r"task 't': .*main\.py: file does not exist"):
        check_task_source(folder, task="t")
