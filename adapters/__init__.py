"""Adapters: one package per technology, plus `bootstrap` (settings and the wiring) and
`entrypoints` (one module per command)."""
