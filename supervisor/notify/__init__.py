"""Telling the user when something goes wrong: notices through Apprise channels, healthchecks-style pings,
a local Command hook and the supervisor's own heartbeat (README, "Being told").

Split by concern: ``model`` (plain data), ``settings`` (the [Notify] / heartbeat keys, validated), ``policy``
(pure: which events a finished run causes), ``message`` (pure: the notice's text, masked), ``senders`` (one
delivery each: Apprise, urllib, subprocess), ``delivery`` (the worker thread with its bounded queue),
``heartbeat`` (the supervisor's dead-man's switch), ``watch`` (pure: silent, slow, repeats) with ``timers`` (its
timer thread), and ``notifier`` (the run-finished consumer tying them).
Importing this package stays cheap: Apprise is imported only where a URL is checked or a notice is sent.
"""
