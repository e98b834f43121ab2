"""Task Automation: run Python task folders on schedule, each in its own virtualenv, as contained children."""

__version__ = "0.1.0"
