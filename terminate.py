"""Stop the running supervisor and wait until it and every child are gone: ``python3 terminate.py``.

Exits 1 with one line when no supervisor is running on the home.
"""

import sys
from pathlib import Path

try:
    from supervisor.cli.entry import main
except ImportError as exc:  # e.g. the system python3 without the dependencies installed
    sys.exit(
        f"terminate.py: cannot start: {exc}. Use the python that runs the supervisor, "
        f"e.g. .venv/bin/python terminate.py"
    )

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="terminate.py", command="stop", default_home=Path(__file__).resolve().parent))
