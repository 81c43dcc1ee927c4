"""Distillation and compression: teacher data, logit distillation across tokenizers, Impossible Distillation, prompt compression, pruning (METHODS.md category 4)."""
