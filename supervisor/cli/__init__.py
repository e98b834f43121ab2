"""The command line (an edge): argument parsing (``args``), one entry point (``entry``), the commands that work
offline (``validate``, ``next``, ``doctor``, ``scaffold``) and human rendering (``render``). Errors become one
line on stderr and a non-zero exit. May import anything below the edges; no other edge imports it.
"""

from .entry import main

__all__ = ["main"]
