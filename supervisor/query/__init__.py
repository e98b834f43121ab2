"""The one query layer: what the loop knows plus the history become the ``status --json`` / ``history --json``
documents and the "why" lines, live or offline. Readers (the CLI, the dashboard) get their answers here, the
status document through the one live-or-offline ``source``. May import the layers below it (kernel, config,
discovery, envs, history, scheduling, execution's data, system's control client), never ``core`` or an edge.
"""
