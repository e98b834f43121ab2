"""The loop and the parts it owns: one thread owns every task's state (``loop``: dispatch and the turn's
phases); the task book brings folders to ``scheduled`` (``tasks``, with ``loading`` and ``envgc``), the run
book starts and settles runs of main() (``runbook``), the lifecycle tables say which moves exist and
``Lifecycle.move`` makes them and emits one event each (``lifecycle``); beside them the run slots
(``slots``), the launcher and its processes in flight (``launch``), the run facts (``facts``), the log lines
(``reporting``), pausing, the missed-runs book (``missing``), the status snapshots answered off the loop
thread (``snapshot``) and the answers to control requests (``requests``). May import every layer below it;
only the composition root (``service``) and the edges import it.
"""
