"""Benchmarks of the supervisor against the floor and its peers; entry point: bench/run.py."""
