"""Finding tasks on disk: scan ``Tasks/`` into content hashes and diff two scans (``scan``), turn file-system
events into debounced rescan hints (``watcher``), and check what inotify really watches (``coverage``).
May import the kernel only.
"""
