"""[Frequency] After, the pure part: cycles among tasks, upstreams that are missing or disabled, and the
restart rule. No I/O: the loop (core/chains.py) and ``validate`` (cli/validate.py) hand in what they read.

Policies (README "Chains", docs/cli.md):
* A cycle (``a -> b -> a``) is a config error on every task of the cycle, named the same way on each, starting
  at the task it is reported for. Tasks that only lead into a cycle are not part of it and stay loaded.
* An upstream that is not a task folder, or is disabled, is a warning: the task stays loaded and runs after
  that task once it exists and runs.
* Restart: a downstream start waiting in memory is lost when the supervisor stops. When a task is loaded
  (start-up, re-enabled, fixed), ``catch_up`` runs it once for an upstream's newest finished run that matches
  its AfterOutcome, has no row of the downstream (any ``after`` row names its upstream run id, a skipped one
  too) and finished after the downstream's newest ``after`` row started. A downstream that never ran after
  anything starts with the next upstream run (adding a task never runs it for old runs). So an upstream
  that finished just before a stop runs its downstream once after the restart; never twice, because that
  run's row names the upstream run.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..model import AfterOutcome, RunRecord, Trigger


def find_cycles(after: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Task -> its cycle in words (``a -> b -> a``, from that task round to it again) for every task on a
    cycle of ``after`` (task -> the tasks it runs after); tasks not on a cycle are left out."""
    found: dict[str, str] = {}
    for start in sorted(after):
        if start in found:
            continue
        path = _path_back(start, after)
        if path is not None:
            for i, name in enumerate(path):
                turn = path[i:] + path[:i]
                found[name] = " -> ".join([*turn, name])
    return found


def _path_back(start: str, after: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The shortest cycle through ``start`` (breadth first over the edges task -> its upstreams), or None."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for up in after.get(node, ()):
                if up == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if up not in parents and up in after:
                    parents[up] = node
                    nxt.append(up)
        frontier = nxt
    return None


def upstream_problems(task: str, after: Sequence[str], *, enabled: Mapping[str, bool]) -> list[str]:
    """Warnings for upstreams that are not tasks (``enabled`` has every task folder: name -> Enabled)."""
    found = []
    for up in after:
        if up not in enabled:
            found.append(f"task {task!r}: [Frequency] After names {up!r}, which is not a task folder (yet)")
        elif not enabled[up]:
            found.append(f"task {task!r}: [Frequency] After names {up!r}, which is disabled (Enabled=False)")
    return found


def catch_up(
    upstream_last: RunRecord | None, downstream_after: Sequence[RunRecord], outcome: AfterOutcome
) -> RunRecord | None:
    """The upstream run a task loaded afresh runs after once (see the restart rule above), or None.

    ``upstream_last`` is the upstream's newest finished row; ``downstream_after`` the downstream's newest
    rows with trigger ``after``, newest first (other rows are ignored).
    """
    rows = [row for row in downstream_after if row.trigger is Trigger.AFTER]
    if upstream_last is None or upstream_last.outcome is None or not outcome.matches(upstream_last.outcome):
        return None
    if not rows or upstream_last.finished is None or any(row.upstream == upstream_last.run_id for row in rows):
        return None
    return upstream_last if upstream_last.finished > rows[0].started else None
