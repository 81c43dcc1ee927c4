"""Algorithms several ops share (MinHash, per-sample gradients, diversity, text signals, token counts).

Below ops in the layers: ops import from here, nothing here imports an op.
"""
