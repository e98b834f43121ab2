"""Benchmarks of the supervisor against the floor and its peers (issue 6); entry point: bench/run.py."""
