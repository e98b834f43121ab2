"""Scale-out on RQ + Redis: the supervisor schedules and records; RQ workers on other machines run tasks.

Needs the optional extra ``taskautomation[rq]`` (rq, redis). Nothing here is imported unless
``[Supervisor] Executor = rq`` or the ``worker`` command is used.
"""
