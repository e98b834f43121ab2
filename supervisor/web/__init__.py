"""The web dashboard (optional extra ``taskautomation[web]``): a separate process that reads the history
read-only and acts through the control socket, like the CLI.

Importing this package needs no web framework: ``address`` is pure and used by config validation; the
framework is imported by ``app`` and ``server`` only.
"""
