"""When is a task due? Pure arithmetic over time passed in as arguments; nothing here reads the clock.

Owns the interval/window rules (``windows``), one ``Trigger`` per schedule kind (``triggers``), the walk over
missed slots (``missed``) and the pure ``[Retry]`` policy (``retry``). May import the kernel (``model``,
``errors``) and third-party date libraries only.
"""
