"""The pure core: time math, schedule files, planning and message building.

No I/O here: no sockets, SQLite, signals, threads or wall clock; time is an argument.
tests/test_architecture.py enforces it.
"""
