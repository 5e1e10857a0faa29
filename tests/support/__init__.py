"""Test support code shared by several test modules (parsers, sandboxes); the older helpers stay in ``tests/``."""
