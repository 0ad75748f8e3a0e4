"""Unit tests: the engine, mailbox, machine binding, settings, telemetry and layering."""
