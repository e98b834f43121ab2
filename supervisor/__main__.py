"""``python3 -m supervisor COMMAND``."""

import sys

from .cli.entry import main

sys.exit(main(prog="python3 -m supervisor"))
