"""The test suite (a package, so its shared helpers are importable as ``tests.support``)."""
