"""What runs inside a host: models, stage execution, the state that crosses links, planning."""
