"""Model backends (hf, openai-compatible, vllm, sentence-transformers), the embedded defaults, the
persistent call cache and token/time/cost accounting (DESIGN.md section 6)."""
