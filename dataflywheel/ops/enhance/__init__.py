"""Quality enhancement: rewriting (CoachLM), LLM2LLM, RobustFT noise repair, toxicity control, rebalancing (METHODS.md category 2)."""
