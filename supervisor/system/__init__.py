"""The supervisor's dealings with the operating system as a service: the single-instance lock and the control
socket (``control``), systemd's notify protocol and unit files (``sdnotify``, ``systemd``) and the
open-file limit (``fdlimit``). May import the kernel only.
"""
