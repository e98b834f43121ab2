"""Run the benchmark suite: ``python bench/run.py [--quick] [--only GROUP ...] [--output FILE]``.

Prints the table (figure, ours, baseline measured in the same run, ratio, goal, PASS/FAIL) and writes it,
with the machine it ran on, to ``bench/results.md``. A group that crashes is reported as "not measured" with
its error, and the others still run. Exit code: 0 when every measured goal passed, 1 when one failed or a
group could not be measured, 2 on bad arguments.

``--quick`` finishes in under three minutes on 2 cores; the full run takes about ten to fifteen. The long
groups (``soak``: 100,000 runs, 20–40 minutes) run only when named: ``--only soak``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path, where bench/envs.py would shadow nothing today but
# could any day; the package is imported from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import Settings  # noqa: E402
from bench.stats import Figure, machine_info, render_markdown, render_text  # noqa: E402

# Cheapest first, so a quick look at launch and env figures does not wait for the long ones.
GROUPS = ("launch", "forkserver", "envs", "kill", "reload", "schedule", "idle", "notify", "scaleout", "web")
# Too long for the default run (tens of minutes); run with --only.
LONG_GROUPS = ("soak",)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; under 3 minutes on 2 cores")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS + LONG_GROUPS,
        metavar="GROUP",
        help=f"run only these groups: {', '.join(GROUPS + LONG_GROUPS)} (the last only when named)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results.md", help="results file (default: bench/results.md)"
    )
    args = parser.parse_args(argv)
    settings = Settings(quick=args.quick)
    machine = machine_info()
    # Users' shells do not set this; where it is set (CI images, sandboxes) every run would recompile its
    # task's main.py, which is the task's cost, not the supervisor's. Unset for everything started from here.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        machine["note"] = "PYTHONDONTWRITEBYTECODE was set in the environment; unset for the benchmark"
    print(" | ".join(f"{k}: {v}" for k, v in machine.items()), flush=True)
    started = time.monotonic()
    figures: list[Figure] = []
    for name in args.only or GROUPS:
        group_start = time.monotonic()
        print(f"== {name} ...", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            produced = module.run(settings)
        except Exception as exc:  # noqa: BLE001 - one broken group must not hide the others' figures
            traceback.print_exc()
            produced = [
                Figure(name, f"{name} (group)", "", None, "", None, note=f"not measured: {type(exc).__name__}: {exc}")
            ]
        for figure in produced:
            print(
                f"   {figure.name}: {figure.ours.show(figure.unit, tail=figure.tail) if figure.ours else '—'}"
                f"  [{figure.verdict}]",
                flush=True,
            )
        print(f"   ({time.monotonic() - group_start:.0f} s)", flush=True)
        figures.extend(produced)
    elapsed = time.monotonic() - started
    print()
    print(render_text(figures))
    command = (
        "python bench/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {' '.join(args.only)}" if args.only else "")
    )
    args.output.write_text(render_markdown(figures, machine=machine, command=command, elapsed_s=elapsed))
    print(f"\nwritten to {os.path.relpath(args.output)} in {elapsed:.0f} s")
    return 0 if all(f.passed is not False and f.ours is not None for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
