"""Actors: one task and one bounded mailbox per user, driven by the lifecycle table."""
