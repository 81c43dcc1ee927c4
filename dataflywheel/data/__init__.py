"""Canonical data model, format detection and conversion, reading and writing."""
