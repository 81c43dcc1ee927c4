"""Data selection: heuristics, dedup, embeddings, diversity, model-judged and gradient-based selection."""
