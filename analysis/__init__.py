"""Turning samples and run directories into tables, metrics and reports."""
