"""One virtualenv per distinct set of requirements, under ``HOME/envs/``: content keys, building with virtualenv
and uv or pip, locks, health and garbage collection.

Owns the ``EnvManager`` (``manager``), the loop's builder seam (``builder``), the toolchain (``installer``),
requirements reading and checking (``reqparse``, ``reqcheck``), PEP 723 blocks (``pep723``), build locks and
interpreter health. May import the kernel only.
"""
