"""Adapters: the one place each library's private attributes are used, where it has no public API for
what rnnexp needs (one module per library, each use with the version it was written for).
tests/test_compat.py exercises every function against the installed versions and names the adapter
that an upgrade broke."""
