"""Environment figures: a cold env build from local wheels, and "is this env current?" on restart.

Hermetic: the wheels are built on the spot with ``tests/helpers.build_wheel`` and every requirements file says
``--no-index --find-links DIR``; the host's pip configuration (find-links, indexes, constraints) is hidden
from the pip baseline.

*Cold* means: a new HOME (no env folder, no lock file) and a fresh, empty ``UV_CACHE_DIR`` (``PIP_CACHE_DIR``
for pip) for every single build, ours and the baselines alike, so no wheel is unpacked from a cache. What is
*not* reset is what a running supervisor keeps between builds: ``virtualenv`` is imported and its
interpreter-information cache is warm, exactly as for every build after the supervisor's first.

* ours: ``EnvManager.ensure`` (virtualenv in-process with no seed packages, then ``uv pip install``);
* baseline 1: ``uv venv ENV`` + ``uv pip install --python ENV/bin/python -r requirements.txt``;
* baseline 2: ``python -m venv ENV`` + ``ENV/bin/python -m pip install -r requirements.txt``.
Rounds are interleaved ours, uv, pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from supervisor.envs.installer import InstallerRun
from supervisor.envs.manager import EnvManager
from supervisor.paths import Paths

from .common import Settings, build_wheel, hermetic_env, now_ns, temp_home
from .stats import Figure, ratio_of, summarize

GROUP = "envs"
PACKAGES = ("bench-alpha", "bench-beta", "bench-gamma", "bench-delta", "bench-epsilon")


def _requirements(folder: Path, wheels: Path, packages: Sequence[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "requirements.txt"
    path.write_text(f"--no-index\n--find-links {wheels}\n" + "".join(f"{p}\n" for p in packages))
    return path


def _check_imports(python: Path, packages: Sequence[str]) -> None:
    modules = ", ".join(p.replace("-", "_") for p in packages)
    subprocess.run([str(python), "-c", f"import {modules}"], check=True, stdin=subprocess.DEVNULL, env=hermetic_env())


class _Builds:
    """One set of requirements, built cold by each contender in its own fresh folder."""

    def __init__(self, scratch: Path, wheels: Path, packages: Sequence[str]) -> None:
        self.scratch = scratch
        self.wheels = wheels
        self.packages = packages
        self.checked: set[str] = set()
        self._n = 0

    def _fresh(self, what: str) -> tuple[Path, Path]:
        self._n += 1
        folder = Path(tempfile.mkdtemp(prefix=f"{what}{self._n}-", dir=self.scratch))
        cache = folder / "cache"
        cache.mkdir()
        return folder, cache

    def ours(self) -> float:
        folder, cache = self._fresh("ours")
        paths = Paths(folder / "home")
        paths.ensure()
        task_dir = paths.task_dir("t")
        requirements = _requirements(task_dir, self.wheels, self.packages)
        manager = EnvManager(paths, installer="uv")  # once per supervisor life: not part of the build
        previous = os.environ.get("UV_CACHE_DIR")
        os.environ["UV_CACHE_DIR"] = str(cache)
        try:
            start = now_ns()
            status = manager.ensure(task="t", requirements=requirements, task_dir=task_dir)
            elapsed = (now_ns() - start) / 1e6
        finally:
            if previous is None:
                os.environ.pop("UV_CACHE_DIR", None)
            else:
                os.environ["UV_CACHE_DIR"] = previous
        self._verify("ours", status.python)
        shutil.rmtree(folder, ignore_errors=True)
        return elapsed

    def uv(self) -> float:
        folder, cache = self._fresh("uv")
        requirements = _requirements(folder / "t", self.wheels, self.packages)
        env = hermetic_env(UV_CACHE_DIR=str(cache))
        uv = _uv_binary()
        venv = folder / "env"
        start = now_ns()
        subprocess.run(
            [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
            check=True,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=folder / "t",
        )
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", str(requirements)],
            check=True,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=folder / "t",
        )
        elapsed = (now_ns() - start) / 1e6
        self._verify("uv", venv / "bin" / "python")
        shutil.rmtree(folder, ignore_errors=True)
        return elapsed

    def pip(self) -> float:
        folder, cache = self._fresh("pip")
        requirements = _requirements(folder / "t", self.wheels, self.packages)
        env = hermetic_env(PIP_CACHE_DIR=str(cache))
        venv = folder / "env"
        start = now_ns()
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, env=env, stdin=subprocess.DEVNULL, cwd=folder / "t"
        )
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
            check=True,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=folder / "t",
        )
        elapsed = (now_ns() - start) / 1e6
        self._verify("pip", venv / "bin" / "python")
        shutil.rmtree(folder, ignore_errors=True)
        return elapsed

    def _verify(self, who: str, python: Path | None) -> None:
        """Once per contender: the env really has the packages (a fast build of nothing proves nothing)."""
        if who in self.checked:
            return
        assert python is not None, f"{who}: no interpreter"
        _check_imports(python, self.packages)
        self.checked.add(who)


def _uv_binary() -> str:
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise RuntimeError("uv is not installed") from None
        return found


def env_builds(settings: Settings, scratch: Path, wheels: Path, packages: Sequence[str]) -> list[Figure]:
    label = f"{len(packages)} wheel" + ("s" if len(packages) > 1 else "")
    builds = _Builds(scratch, wheels, packages)
    rounds = int(settings.pick(3, 5))
    pip_rounds = int(settings.pick(1, 3))
    ours_ms: list[float] = []
    uv_ms: list[float] = []
    pip_ms: list[float] = []
    builds.ours()  # warm-up: imports virtualenv and fills its interpreter cache, as any earlier build would
    for index in range(rounds):
        ours_ms.append(builds.ours())
        uv_ms.append(builds.uv())
        if index < pip_rounds:
            pip_ms.append(builds.pip())
    ours, uv, pip = summarize(ours_ms), summarize(uv_ms), summarize(pip_ms)
    to_uv, to_pip = ratio_of(ours, uv), ratio_of(ours, pip)
    return [
        Figure(
            GROUP,
            f"env build, cold, {label}",
            "ms",
            ours,
            "≤ 2×",
            to_uv is not None and to_uv <= 2.0,
            baseline=uv,
            baseline_name="uv venv + uv pip install",
            ratio=to_uv,
        ),
        Figure(
            GROUP,
            f"env build, cold, {label}, vs venv + pip",
            "ms",
            ours,
            "≥ 10× faster (≤ 0.10×)",
            to_pip is not None and to_pip <= 0.10,
            baseline=pip,
            baseline_name="python -m venv + pip",
            ratio=to_pip,
            note=f"{len(pip_ms)} pip build(s); fresh UV_CACHE_DIR / PIP_CACHE_DIR per build"
            if len(packages) == 1
            else "",
        ),
    ]


class _CountingInstaller:
    """The EnvManager installer seam: counts calls and refuses to install anything."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, argv: Sequence[str], **_: object) -> InstallerRun:
        self.calls += 1
        return InstallerRun(returncode=1, output="the is-current benchmark must not install")


def is_current_per_call(home: Path, wheels: Path, *, calls: int) -> tuple[list[float], int]:
    """Per-call ms of ``key_for`` + ``is_ready`` for a task whose env is built; and the installer call count.

    That pair is what the loop asks for every task at start-up ("is this env current?").
    """
    paths = Paths(home)
    paths.ensure()
    task_dir = paths.task_dir("current")
    requirements = _requirements(task_dir, wheels, PACKAGES[:2])
    EnvManager(paths).ensure(task="current", requirements=requirements, task_dir=task_dir)
    counting = _CountingInstaller()
    manager = EnvManager(paths, run=counting)  # what a restarted supervisor constructs
    samples: list[float] = []
    for _ in range(calls):
        start = now_ns()
        key = manager.key_for(requirements, task_dir=task_dir)
        ready = manager.is_ready(key)
        samples.append((now_ns() - start) / 1e6)
        if not ready:
            raise AssertionError(f"env {key} should be ready")
    return samples, counting.calls


def run(settings: Settings) -> list[Figure]:
    figures: list[Figure] = []
    with temp_home("envs", settings) as scratch:
        wheels = scratch / "wheels"
        for name in PACKAGES:
            build_wheel(wheels, name, "1.0")
        figures += env_builds(settings, scratch, wheels, PACKAGES[:1])
        figures += env_builds(settings, scratch, wheels, PACKAGES)
        samples, installer_calls = is_current_per_call(scratch / "restart", wheels, calls=int(settings.pick(500, 3000)))
        current = summarize(samples)
        figures.append(
            Figure(
                GROUP,
                '"is this env current?" on restart',
                "ms",
                current,
                "≤ 1 ms, never calls an installer",
                current.median <= 1.0 and installer_calls == 0,
                tail=True,
                note=f"EnvManager.key_for + is_ready per task; installer calls: {installer_calls}",
            )
        )
    return figures
