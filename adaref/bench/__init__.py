"""Benchmarks: ``python -m adaref.bench NAME``; each prints a table, none is a test.

Each benchmark is a module ``adaref.bench.NAME`` with ``main(argv) -> int``.
"""
