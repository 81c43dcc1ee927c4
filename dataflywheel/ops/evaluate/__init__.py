"""Evaluator operators: held-out loss, LLM-as-a-judge (single and pairwise), verifiable accuracy."""
