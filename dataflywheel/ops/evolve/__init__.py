"""Self-evolution (METHODS.md category 5): Self-Rewarding, Self-Refine, evolving evaluation; built as
loops (ops.core.loop) over LLM ops (ops.llm)."""
