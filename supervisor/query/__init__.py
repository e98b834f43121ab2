"""The one query layer: what the loop knows plus the history become the ``status --json`` / ``history --json``
documents and the "why" lines, live or offline. Readers (the CLI, the dashboard) get their answers here.
May import the layers below it (kernel, config, discovery, envs, history, scheduling, execution's data),
never ``core`` or an edge.
"""
