"""Start the Task Automation supervisor in the foreground: ``python3 main.py [--home DIR]``.

HOME defaults to this file's folder (``--home`` or $TASKAUTOMATION_HOME override it). Ctrl-C, SIGTERM or
``python3 terminate.py`` stop it cleanly.
"""

import sys
from pathlib import Path

try:
    from supervisor.cli.entry import main
except ImportError as exc:  # e.g. the system python3 without the dependencies installed
    sys.exit(
        f"main.py: cannot start: {exc}. Install the dependencies first: python3 -m venv .venv && "
        f".venv/bin/pip install -e . && .venv/bin/python main.py"
    )

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="main.py", command="run", default_home=Path(__file__).resolve().parent))
