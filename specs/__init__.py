"""Executable specifications: the lifecycle diagram, a reference model and invariants."""
