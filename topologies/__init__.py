"""Mininet topologies and link models: what the network is."""
