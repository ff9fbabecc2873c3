"""Bringing a scenario to life and back down, and the `edgestage` command line."""
