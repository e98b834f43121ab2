"""The loop and its books: one thread owns every task's state (``loop``); the task book brings folders to
``scheduled`` (``tasks``), the run book starts and settles runs (``runbook``), the lifecycle table says which
moves exist (``lifecycle``), with the run queue (``slots``), pausing and the answers to control requests
(``requests``). May import every layer below it; only the composition root (``service``) and the edges
import it.
"""
