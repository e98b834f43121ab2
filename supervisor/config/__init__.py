"""Reading ``config.ini`` and ``taskautomation.ini`` into validated specs, with errors that name file, section,
key and value.

Owns the ini core (``inifile``), the two schemas (``schema``), the validators of single values (``values``,
``schedule_keys``) and ``[Web] Listen`` addresses (``listen``). May import the kernel and, sideways, the
scheduling layer (a Cron key is checked by computing its next slot). ``notify_keys`` validates the
[Notify] and heartbeat keys, and owns ``mask_url`` (a URL safe for a log line), which notify/ imports.
"""
