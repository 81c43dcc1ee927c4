"""Executors, checkpoints and resume, the run directory and its manifest."""
