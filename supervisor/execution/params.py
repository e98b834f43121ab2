"""Run parameters: ``run-now NAME --env KEY=VALUE`` (also the JSON API and the dashboard's run form). The
values go into that one run's environment only; its history row keeps them as shown, a secret's value masked.

Policy (docs/cli.md, run-now):
* KEY is an environment variable name (``[A-Za-z_][A-Za-z0-9_]*``, at most 128 characters), and not one the
  supervisor sets for every run: ``TASK_*``, ``TASKAUTOMATION_*``, ``PATH``, ``VIRTUAL_ENV``,
  ``PYTHONHOME``. VALUE is any text without a NUL character, at most 32 KiB. At most 64 parameters, each KEY
  once. Anything else is a ``ParamError`` naming the key and the reason (the CLI: usage error, exit 2; the
  control socket: code ``bad-request``; the JSON API: 400).
* A parameter wins over the same variable from a ``.env`` file or the supervisor's environment.
* Shown masked (``***``) when its KEY is a variable of the task's ``.env`` files (the home's or its own) or
  looks like a secret (its name holds SECRET, TOKEN, PASSWORD/PASSWD/PASS, PWD, KEY, CREDENTIAL, AUTH,
  COOKIE, SESSION or PRIVATE, in any case); a masked value is also masked in the run's output.
* Never kept for later runs: they belong to the one manual run (a start retried after a transient failure is
  the same run and keeps them; a [Retry] attempt is a new run and does not get them).
"""

from __future__ import annotations

import re
from typing import Collection, Iterable, Mapping

from .secrets import MASK

RunParams = tuple[tuple[str, str], ...]  # (KEY, VALUE) pairs, sorted by KEY

MAX_PARAMS = 64
MAX_KEY = 128
MAX_VALUE = 32 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_PREFIXES = ("TASK_", "TASKAUTOMATION_")
_RESERVED = frozenset({"PATH", "VIRTUAL_ENV", "PYTHONHOME"})
_RESERVED_SHOWN = "TASK_*, TASKAUTOMATION_*, PATH, VIRTUAL_ENV, PYTHONHOME"
_SECRET_WORDS = re.compile(r"SECRET|TOKEN|PASS|PWD|KEY|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)


class ParamError(ValueError):
    """A run parameter that cannot be used; the message names its key (quoted) and says why."""


def check_param(key: str, value: str) -> tuple[str, str]:
    """``(key, value)`` when both are acceptable (see the policy), else a ParamError."""
    if not _NAME.fullmatch(key) or len(key) > MAX_KEY:
        raise ParamError(
            f"{key[:MAX_KEY]!r}: not an environment variable name (letters, digits and _, not starting "
            f"with a digit, at most {MAX_KEY} characters)"
        )
    upper = key.upper()
    if upper in _RESERVED or upper.startswith(_RESERVED_PREFIXES):
        raise ParamError(f"{key!r}: reserved, the supervisor sets it for every run ({_RESERVED_SHOWN})")
    if "\0" in value:
        raise ParamError(f"{key!r}: the value contains a NUL character")
    if len(value) > MAX_VALUE:
        raise ParamError(f"{key!r}: the value is {len(value)} characters long, at most {MAX_VALUE}")
    return key, value


def parse_assignment(text: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` of the command line or the dashboard's form (the value may hold ``=``)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ParamError(f"{text[:MAX_KEY]!r}: expected KEY=VALUE")
    return check_param(key.strip(), value)


def collect(pairs: Iterable[tuple[str, str]]) -> RunParams:
    """Checked pairs, each KEY once, sorted by KEY."""
    seen: dict[str, str] = {}
    for key, value in pairs:
        check_param(key, value)
        if key in seen:
            raise ParamError(f"{key!r}: given twice")
        seen[key] = value
        if len(seen) > MAX_PARAMS:
            raise ParamError(f"more than {MAX_PARAMS} parameters")
    return tuple(sorted(seen.items()))


def from_json(raw: object) -> RunParams:
    """The ``env`` of a control request or a JSON API body: an object of text values (absent/null = none)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ParamError(f"expected an object of KEY: VALUE text, got {type(raw).__name__}")
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ParamError(f"{key!r}: expected a text value, got {type(value).__name__}")
    return collect(raw.items())


def from_lines(text: str) -> RunParams:
    """The dashboard's run form: one KEY=VALUE per line; blank lines are ignored."""
    return collect(parse_assignment(line) for line in text.splitlines() if line.strip())


def looks_secret(key: str) -> bool:
    return _SECRET_WORDS.search(key) is not None


def is_hidden(key: str, secret_keys: Collection[str]) -> bool:
    """True when the value of ``key`` is shown masked (see the policy)."""
    return key in secret_keys or looks_secret(key)


def shown(params: RunParams, secret_keys: Collection[str]) -> RunParams:
    """The pairs as the history shows them: a hidden key's value is ``***``."""
    return tuple((key, MASK if is_hidden(key, secret_keys) else value) for key, value in params)


def hidden_values(params: RunParams, secret_keys: Collection[str]) -> list[str]:
    """The values to mask in the run's output too."""
    return [value for key, value in params if is_hidden(key, secret_keys)]
