"""Adapters: one implementation of an engine port per technology, and the composition root."""
