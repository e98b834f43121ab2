"""The text templates the command line writes files from (package data, so an installed tool has them too):
main.py of an imported crontab job (``cron_python.py.tmpl``, ``cron_shell.py.tmpl``) and the commented-out
``taskautomation.ini`` of ``init``."""

from __future__ import annotations

from importlib import resources


def read_template(name: str) -> str:
    """The text of the template file ``name`` of this package."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
