"""Butler's pure core: domain values, lifecycle table, ports, prompt budget and policies.

Nothing here performs I/O or imports a framework; `actors` and `adapters` build on it.
"""
