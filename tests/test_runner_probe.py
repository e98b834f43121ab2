"""cgroup v2 detection: which memory-limit mechanism is in force is explained from files, not guessed."""

from __future__ import annotations

from pathlib import Path

from supervisor.runner import cgroup_v2_memory_support


def _layout(tmp_path: Path, *, self_cgroup: str, controllers: str | None) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text(self_cgroup)
    root = tmp_path / "fs"
    root.mkdir()
    if controllers is not None:
        (root / "cgroup.controllers").write_text(controllers)
    (root / "user.slice").mkdir()
    return proc, root


def test_v1_only(tmp_path: Path) -> None:
    proc, root = _layout(tmp_path, self_cgroup="4:memory:/x\n", controllers=None)
    ok, why = cgroup_v2_memory_support(proc_self_cgroup=proc, cgroup_root=root)
    assert not ok and "v1" in why


def test_v2_without_memory_controller(tmp_path: Path) -> None:
    proc, root = _layout(tmp_path, self_cgroup="0::/user.slice\n", controllers="cpu pids\n")
    ok, why = cgroup_v2_memory_support(proc_self_cgroup=proc, cgroup_root=root)
    assert not ok and "memory controller" in why


def test_v2_with_memory_and_writable_cgroup(tmp_path: Path) -> None:
    proc, root = _layout(tmp_path, self_cgroup="0::/user.slice\n", controllers="cpu memory pids\n")
    ok, why = cgroup_v2_memory_support(proc_self_cgroup=proc, cgroup_root=root)
    assert ok and str(root / "user.slice") in why


def test_unreadable_proc_file(tmp_path: Path) -> None:
    ok, why = cgroup_v2_memory_support(proc_self_cgroup=tmp_path / "missing", cgroup_root=tmp_path)
    assert not ok and "cannot read" in why
