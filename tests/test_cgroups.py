"""MaxProcesses and cgroup detection without processes: config keys, the layout choice, the shim's plan, which
pids cap refused a fork, what counts as a transient start failure."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from supervisor.config.schema import parse_home_config, parse_task_config
from supervisor.errors import ConfigError
from supervisor.execution._wire import ContainmentPlan, resource_shortage
from supervisor.execution.cgroup_layout import Layout, parse_layout
from supervisor.execution.cgroups import Containment, RunGroup, containment_plan
from supervisor.execution.executor import is_transient_start_failure
from supervisor.execution.pidcaps import PidsCap, caps_from, refusal_detail, refusing_cap
from supervisor.model import Limits

PATH = Path("/home/pi/Tasks/demo/config.ini")
HOME_PATH = Path("/home/pi/taskautomation.ini")
SEED = "[Frequency]\nEveryXMinutes = 15\n"

# This machine's kind of layout: v1 controllers mounted one per hierarchy, an empty cgroup2 beside them.
HYBRID_CGROUP = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/sandbox/abc\n0::/\n"
HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd machine on cgroup v2 only, the supervisor in a delegated service group.
V2_CGROUP = "0::/system.slice/taskautomation.service\n"
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


# ---------------------------------------------------------------------------------------------- config
def test_max_processes_defaults_to_1024_and_is_read_case_insensitively() -> None:
    assert parse_task_config(SEED, task="demo", path=PATH).spec.limits.max_processes == 1024
    text = SEED + "[limits]\nmaxprocesses = 64\n"
    assert parse_task_config(text, task="demo", path=PATH).spec.limits.max_processes == 64


def test_max_processes_zero_means_no_cap() -> None:
    text = SEED + "[Limits]\nMaxProcesses = 0\n"
    assert parse_task_config(text, task="demo", path=PATH).spec.limits.max_processes is None


@pytest.mark.parametrize(
    "value, reason",
    [
        ("many", "not a whole number (processes and threads of one run; 0 = no cap)"),
        ("12.5", "not a whole number (processes and threads of one run; 0 = no cap)"),
        ("-1", "must be 0 (no cap) or more"),
        ("5000000", "too large (at most 4194304, the kernel's pid limit)"),
    ],
)
def test_invalid_max_processes_names_task_file_section_key_and_value(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_task_config(SEED + f"[Limits]\nMaxProcesses = {value}\n", task="demo", path=PATH)
    assert str(caught.value) == f"task 'demo': {PATH}: [Limits] MaxProcesses = {value!r}: {reason}"


def test_home_wide_max_processes_is_the_default_a_task_overrides() -> None:
    home, warnings = parse_home_config("[Limits]\nMaxProcesses = 200\n", path=HOME_PATH)
    assert warnings == () and home.limits.max_processes == 200
    plain = parse_task_config(SEED, task="demo", path=PATH, defaults=home.limits).spec
    own = parse_task_config(SEED + "[Limits]\nMaxProcesses = 50\n", task="demo", path=PATH, defaults=home.limits).spec
    assert (plain.limits.max_processes, own.limits.max_processes) == (200, 50)
    with pytest.raises(ConfigError, match=r"taskautomation.ini: \[Limits\] MaxProcesses = 'x': not a whole"):
        parse_home_config("[Limits]\nMaxProcesses = x\n", path=HOME_PATH)


# ---------------------------------------------------------------------------------------------- layout
def test_hybrid_machine_uses_the_v1_controllers_below_our_own_groups() -> None:
    layout = parse_layout(HYBRID_CGROUP, HYBRID_MOUNTS, controllers_of=lambda d: set())
    assert layout.v2 is None and layout.usable
    assert layout.v1 == {
        "pids": Path("/sys/fs/cgroup/pids"),
        "memory": Path("/sys/fs/cgroup/memory/sandbox/abc"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }
    assert layout.notes == ("cgroup v2 at /sys/fs/cgroup/unified does not offer memory and pids",)


def test_v2_with_pids_and_memory_offered_is_chosen() -> None:
    seen: list[Path] = []

    def controllers(directory: Path) -> set[str]:
        seen.append(directory)
        return {"cpu", "io", "memory", "pids"}

    layout = parse_layout(V2_CGROUP, V2_MOUNTS, controllers_of=controllers)
    assert layout.v2 == Path("/sys/fs/cgroup/system.slice/taskautomation.service") and layout.usable
    assert seen == [layout.v2]


def test_v2_without_the_pids_controller_and_no_v1_is_no_cgroup() -> None:
    layout = parse_layout(V2_CGROUP, V2_MOUNTS, controllers_of=lambda d: {"memory"})
    assert not layout.usable
    assert layout.notes == (
        "cgroup v2 at /sys/fs/cgroup/system.slice/taskautomation.service does not offer pids",
        "no cgroup v1 pids controller mounted",
    )


def test_a_mount_of_another_subtree_does_not_show_our_group() -> None:
    # A container sees only /lxc/box of the pids hierarchy; a group outside it is not reachable there.
    mounts = "39 31 0:36 /lxc/box /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    inside = parse_layout("8:pids:/lxc/box/app\n", mounts, controllers_of=lambda d: None)
    outside = parse_layout("8:pids:/elsewhere\n", mounts, controllers_of=lambda d: None)
    assert inside.v1 == {"pids": Path("/sys/fs/cgroup/pids/app")}
    assert not outside.usable


def test_mount_points_with_spaces_are_unescaped() -> None:
    mounts = "39 31 0:36 / /mnt/my\\040cgroups rw - cgroup cgroup rw,pids\n"
    assert parse_layout("8:pids:/\n", mounts, controllers_of=lambda d: None).v1 == {"pids": Path("/mnt/my cgroups")}


# ---------------------------------------------------------------------------------------------- descriptions
def test_without_cgroups_the_start_line_names_rlimit_and_root_gets_a_warning(tmp_path: Path) -> None:
    user = Containment(tmp_path, layout=Layout(notes=("no cgroup v1 pids controller mounted",)), uid=1000)
    assert user.start() == [
        "pids: RLIMIT_NPROC in each run, counting all processes of uid 1000; memory: "
        "sampling each run's tree; kill: SIGSTOP to every process, then the signal (no "
        "cgroup: no cgroup v1 pids controller mounted)"
    ]
    root = Containment(tmp_path, layout=Layout(), uid=0)
    lines = root.start()
    assert len(lines) == 2 and lines[1].startswith("WARNING: running as root without a writable cgroup")
    assert root.create("r1", max_processes=10, memory_mb=None) is None


def test_rlimit_fallback_adds_max_processes_to_what_the_user_has(tmp_path: Path) -> None:
    user = Containment(tmp_path, layout=Layout(), uid=1000)
    assert user.nproc_limit(64, group=None, count_tasks=lambda uid: 300) == 364
    assert user.nproc_limit(None, group=None, count_tasks=lambda uid: 300) is None  # MaxProcesses = 0
    root = Containment(tmp_path, layout=Layout(), uid=0)
    assert root.nproc_limit(64, group=None, count_tasks=lambda uid: 300) is None  # the kernel exempts root


# ---------------------------------------------------------------------------------------------- the shim's plan
def test_the_plan_the_supervisor_writes_is_the_plan_the_shim_reads() -> None:
    group = RunGroup(
        run_id="r1",
        version=1,
        max_processes=64,
        memory_mb=None,
        dirs={"pids": Path("/cg/pids/p/r1"), "freezer": Path("/cg/free zer/p/r1")},
    )
    plan = ContainmentPlan.decode(containment_plan(group=group, nproc=None))
    assert plan == ContainmentPlan(
        join=("/cg/pids/p/r1/cgroup.procs", "/cg/free zer/p/r1/cgroup.procs"), kill=("v1-freezer", "/cg/free zer/p/r1")
    )
    with_parents = containment_plan(group=group, nproc=None, parents=[Path("/cg/pids/p"), Path("/cg/free zer/p")])
    assert ContainmentPlan.decode(with_parents).parents == ("/cg/pids/p", "/cg/free zer/p")
    assert ContainmentPlan.decode(containment_plan(group=None, nproc=300)) == ContainmentPlan(nproc=300)
    assert containment_plan(group=None, nproc=None) == ""  # nothing to contain: no variable at all
    assert ContainmentPlan.decode(None) == ContainmentPlan()
    v2 = RunGroup(run_id="r2", version=2, max_processes=None, memory_mb=64, dirs={"v2": Path("/cg/p/r2")})
    assert ContainmentPlan.decode(containment_plan(group=v2, nproc=None)).kill == ("v2", "/cg/p/r2")


def test_default_limits_carry_the_documented_process_cap() -> None:
    assert Limits().max_processes == 1024


# ------------------------------------------------------------------------- which pids cap refused a fork
def _caps(*caps: tuple[str, int, int]) -> list[PidsCap]:
    return [PidsCap(path=Path(path), limit=limit, current=current) for path, limit, current in caps]


def test_the_cap_with_no_room_left_refused_the_forks_nearest_first_on_a_tie() -> None:
    run, home, outer = "/cg/outer/home/run", "/cg/outer/home", "/cg/outer"
    assert refusing_cap(_caps((run, 1024, 390), (outer, 400, 400))) == PidsCap(Path(outer), 400, 400)
    assert refusing_cap(_caps((run, 64, 64), (outer, 400, 80))) == PidsCap(Path(run), 64, 64)
    assert refusing_cap(_caps((run, 64, 64), (home, 100, 100))) == PidsCap(Path(run), 64, 64)  # tie: the run's own
    assert refusing_cap([]) is None


def test_the_kill_message_names_max_processes_or_the_outer_cgroup_with_its_path() -> None:
    run = Path("/cg/outer/home/run")
    own = refusal_detail(run, refused=3, max_processes=64, caps=_caps((str(run), 64, 64), ("/cg/outer", 400, 70)))
    assert own == "process limit reached: 3 fork(s) refused at MaxProcesses=64 (cgroup pids controller)"
    outer = refusal_detail(
        run, refused=5, max_processes=1024, caps=_caps((str(run), 1024, 399), ("/cg/outer", 400, 400))
    )
    assert outer == (
        "process limit reached: 5 fork(s) refused at pids.max=400 of the outer cgroup /cg/outer "
        "(cgroup pids controller; the run's MaxProcesses=1024 was not reached)"
    )


def test_caps_are_read_from_the_run_group_up_to_the_hierarchy_root(tmp_path: Path) -> None:
    """Real files in a fake tree: the root (no pids.max) ends the walk; "max" is no cap."""
    groups = {"outer": ("400", "12"), "outer/home": ("max", "12"), "outer/home/run": ("1024", "10")}
    for rel, (limit, current) in groups.items():
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "pids.max").write_text(limit + "\n")
        (tmp_path / rel / "pids.current").write_text(current + "\n")
    assert caps_from(tmp_path / "outer/home/run") == [
        PidsCap(tmp_path / "outer/home/run", 1024, 10),
        PidsCap(tmp_path / "outer", 400, 12),
    ]


@pytest.mark.parametrize(
    ("exc", "shortage"),
    [
        (BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), True),
        (OSError(errno.EMFILE, "Too many open files"), True),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), True),
        (MemoryError(), True),
        (RuntimeError("can't start new thread"), True),
        (OSError(errno.ENOENT, "No such file or directory"), False),
        (RuntimeError("something else"), False),
    ],
)
def test_a_lack_of_processes_threads_memory_or_files_is_a_transient_start_failure(
    exc: BaseException, shortage: bool
) -> None:
    assert resource_shortage(exc) is shortage
    assert is_transient_start_failure(exc) is shortage
