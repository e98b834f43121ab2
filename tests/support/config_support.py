"""Shared by the config tests: a task's config.ini text parsed as task 'demo', and the message of the error
it raises (every message starts with PREFIX)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.schema import parse_task_config
from supervisor.errors import ConfigError
from supervisor.model import ConfigResult, Limits, RetryPolicy

PATH = Path("/home/pi/Tasks/demo/config.ini")
PREFIX = f"task 'demo': {PATH}: "


def parse(text: str, *, defaults: Limits = Limits(), retry_defaults: RetryPolicy = RetryPolicy()) -> ConfigResult:
    return parse_task_config(text, task="demo", path=PATH, defaults=defaults, retry_defaults=retry_defaults)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)
