"""The run history in SQLite (WAL, ``synchronous=FULL``): its schema and migrations (``schema``), rows and their
JSON shape (``rows``), the store (``store``, with the timeline's counts in ``bins``), the write-behind front
that never blocks the loop (``writebehind``) and the loop's writer and run-finished consumers (``recorder``).
May import the kernel only.
"""
