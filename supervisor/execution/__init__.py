"""Where and how one process of a task runs: the ``Executor`` seam and the local executor, spawning the in-env
shim, the shim and its wire protocol, containment (cgroups, rlimits, tree kills), process scans, run secrets
and the pure outcome decision.

``_shim.py``, ``_wire.py`` and ``_contain.py`` are stdlib-only: the shim runs by file path inside the task's own
interpreter, where this package is not importable. May import the kernel and, sideways, ``envs`` (paths of an
env's interpreter).
"""
