"""Quality enhancement (METHODS.md category 2): rewriting (CoachLM), LLM2LLM, RobustFT noise repair,
toxicity control, rebalancing by synthetic oversampling."""
