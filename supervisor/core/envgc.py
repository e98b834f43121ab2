"""Collecting envs nothing refers to any more.

Policy: an env is kept while a task serves runs from it or wants it (its requirements ask for it), while it
is being built, while a run that started in it is still in flight, and while a broken or disabled task's
folder would use it (for when that task is fixed or re-enabled); every other env is deleted.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from ..discovery.scan import TaskFolder
from ..envs.builder import EnvBuilder
from ..paths import REQUIREMENTS_FILE
from .lifecycle import InFlight, TaskState


def keys_in_use(tasks: Iterable[TaskState], in_flight: Iterable[InFlight]) -> set[str]:
    keys = {flight.env_key for flight in in_flight}
    for st in tasks:
        keys.update(k for k in (st.env_key, st.wanted_key) if k)
    return keys


def collect_unused_envs(
    envs: EnvBuilder,
    *,
    tasks: Mapping[str, TaskState],
    folders: Mapping[str, TaskFolder],
    building: set[str],
    in_flight: Iterable[InFlight],
    logger: logging.Logger,
) -> None:
    keep = building | keys_in_use(tasks.values(), in_flight)
    for name, folder in folders.items():
        if name not in tasks or tasks[name].wanted_key is None:
            try:  # a broken or disabled task keeps its env for when it is fixed or re-enabled
                keep.add(envs.key_for(folder.path / REQUIREMENTS_FILE, task_dir=folder.path))
            except Exception:  # noqa: BLE001 - an unreadable folder must not stop the collection
                pass
    try:
        removed = envs.collect(keep)
    except Exception as exc:  # noqa: BLE001 - an env that cannot be deleted now is tried at the next collection
        logger.error("unused envs could not be removed: %r", exc)
        return
    if removed:
        logger.info("removed %d unused env(s): %s", len(removed), ", ".join(removed))
