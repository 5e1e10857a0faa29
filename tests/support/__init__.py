"""Test support code shared by several test modules: config composition, faults and probes, the scripts the
distributed tests launch, parsers and sandboxes. Only ``conftest.py`` stays in ``tests/``, where pytest needs it."""
