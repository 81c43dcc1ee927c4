"""dataflywheel: make LLM post-training data-efficient.

Select, enhance, synthesize, distill and evolve training data with the published algorithms,
on the embedded models or any HF / vLLM / OpenAI-compatible model.
"""

__version__ = "0.1.0"
