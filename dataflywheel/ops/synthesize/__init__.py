"""Synthetic generation (METHODS.md category 3): Self-Instruct, Evol-Instruct, Magpie, SynPO pairs,
knowledge-guided and adversarial generation. Generators here are run by the engine (ops.base.Generator)."""
