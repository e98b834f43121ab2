"""One error family. The CLI edge turns any of these into one line on stderr and a non-zero exit."""

from __future__ import annotations


class TaskAutomationError(Exception):
    """Base of every error the supervisor raises on purpose; its str() is the user-facing line.

    ``transient`` is True when the same operation may well succeed later without anyone changing anything
    (an installer killed by a signal, an unreachable package index, EMFILE/EAGAIN at spawn): callers retry
    those with backoff instead of giving up.
    """

    transient: bool = False

    def __init__(self, *args: object, transient: bool = False) -> None:
        super().__init__(*args)
        self.transient = transient


class ConfigError(TaskAutomationError):
    """A config file (task config.ini or the home config) is unreadable or holds an invalid value.

    The message always names the file, and where it applies the section, the key and the bad value.
    """


class TaskLoadError(TaskAutomationError):
    """A task folder cannot be loaded: main.py missing, not importable, no main(), initialize() raised."""


class EnvBuildError(TaskAutomationError):
    """A task's virtualenv could not be created or its requirements could not be installed.

    ``output`` holds the installer's whole log (for the task's log file); str() is the short reason.
    """

    def __init__(self, message: str, *, output: str = "", transient: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.output = output


class SpawnError(TaskAutomationError):
    """A run's child process could not be started."""


class AlreadyRunningError(TaskAutomationError):
    """Another supervisor holds the home's lock."""


class NotRunningError(TaskAutomationError):
    """No supervisor is running on this home."""


class ControlError(TaskAutomationError):
    """The control channel to the running supervisor failed or refused a request."""


class HistoryStoreError(TaskAutomationError):
    """The run-history database is unreadable, corrupt or locked."""
