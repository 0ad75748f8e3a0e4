"""Entry points: one small module per `butler` command, each `async main(settings, args)`.

They parse nothing and wire nothing themselves: `cli` parses, `adapters.bootstrap` wires.
"""
