"""``taskautomation metrics``: the home's Prometheus exposition, the same as the dashboard's ``GET /metrics``,
on stdout or (``--textfile PATH``) written for node_exporter's textfile collector by an atomic rename.

Works with or without a running supervisor (``taskautomation_supervisor_up`` says which); reads the history
read-only and writes nothing else.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import TaskAutomationError
from ..history.store import HistoryStore
from ..paths import Paths
from ..query.scrape import Scraper, write_textfile
from ..query.source import StatusSource


def cmd_metrics(args: argparse.Namespace, paths: Paths) -> int:
    with HistoryStore(paths.database, readonly=True) as records:
        source = StatusSource(paths, records=records)
        data = Scraper(paths, records=records, source=source, version=__version__).exposition()
    if args.textfile is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    if not args.textfile.parent.is_dir():
        raise TaskAutomationError(f"--textfile {args.textfile}: no folder {args.textfile.parent}")
    if args.textfile.suffix != ".prom":
        # node_exporter reads only *.prom files: anything else would be written and silently never collected.
        raise TaskAutomationError(f"--textfile {args.textfile}: node_exporter's textfile collector reads *.prom only")
    write_textfile(args.textfile, data)
    return 0
