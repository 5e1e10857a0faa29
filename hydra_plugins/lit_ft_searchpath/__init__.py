"""Hydra finds plugins in the ``hydra_plugins`` namespace package; this one adds lit-ft's configs to the search path."""
