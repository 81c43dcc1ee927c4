"""Distillation and compression (METHODS.md category 4): teacher data, logit distillation across
tokenizers, Impossible Distillation, prompt compression, pruning with recovery."""
