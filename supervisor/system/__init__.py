"""The supervisor's dealings with the operating system as a service: the single-instance lock and the control
socket (``control``), systemd's notify protocol and unit files (``sdnotify``, ``systemd``) and the
open-file limit (``fdlimit``), and keeping the supervised dashboard child running (``webchild``: it starts
``python -m supervisor web`` by command line, so nothing here imports the dashboard). May import the kernel
and, sideways, ``config`` (the unit file is written from the home config).
"""
