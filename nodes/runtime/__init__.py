"""The node runtime: the node process and its roles (coordinator, stage worker, device), the
transport between nodes (ZeroMQ, CURVE), the wire protocol, node configs, records, pacing against
hardware profiles, and starting node processes."""
