"""Scale-out transports behind `engine.ports.PartitionLog`: NATS JetStream (`nats`) for many
processes, and memory (`memory`) for one process and for tests."""
