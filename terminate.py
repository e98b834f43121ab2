"""Stop the running supervisor and wait until it and every child are gone: ``python3 terminate.py``.

Exits 1 with one line when no supervisor is running on the home.
"""

import sys
from pathlib import Path

from supervisor.cli import main

if __name__ == "__main__":
    sys.exit(main(["stop", *sys.argv[1:]], prog="terminate.py", default_home=Path(__file__).resolve().parent))
