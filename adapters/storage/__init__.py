"""Storage adapters: one implementation of `engine.ports.Store` per database."""
