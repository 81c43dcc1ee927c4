"""How a recipe names a model (``models:`` entries): the spec lives with the models that read it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelSpec(BaseModel):
    """A recipe's model: which backend runs it, where it is, and what its calls cost."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["hf", "openai", "vllm", "sentence-transformers"] = Field(
        description="how to run the model"
    )
    model: str = Field(description="embedded:NAME, a local folder, a hub name, or the server's model name")
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    dtype: str = Field("auto", description="float32, bfloat16, float16 or auto")
    generate_dtype: str = Field(
        "auto",
        description="hf backend: the weights generation decodes with (scoring keeps dtype); auto = dtype. "
        "bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX) decodes about 2x faster than float32, for a "
        "second copy of the weights in memory; its greedy answers differ from float32's",
    )
    base_url: str | None = Field(
        None, description="openai backend: the server's URL, e.g. http://127.0.0.1:8000/v1"
    )
    api_key_env: str | None = Field(
        None, description="openai backend: environment variable holding the API key"
    )
    structured_outputs: Literal["openai", "vllm", "vllm-legacy", "sglang", "none"] = Field(
        "openai",
        description="openai backend: how the server takes output constraints. openai: response_format "
        "(JSON schemas only); vllm: response_format and structured_outputs (regex, choice, grammar); "
        "vllm-legacy: guided_json/regex/choice/grammar (vLLM before 0.12); sglang: response_format, regex "
        "and ebnf; none: the server takes none (requests go unconstrained, counted). flywheel serve takes "
        "all of them",
    )
    max_concurrency: int = Field(8, ge=1, description="openai backend: requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="seconds before a request is retried")
    max_retries: int = Field(
        5, ge=0, description="retries of a failed request before it is recorded as failed"
    )
    batch_size: int = Field(16, ge=1, description="hf backend: sequences per forward pass")
    cache: Literal["read_write", "read_only", "off"] = Field(
        "read_write", description="persistent call cache"
    )
    price_per_m_input: float = Field(0.0, ge=0, description="price per million prompt tokens")
    price_per_m_output: float = Field(0.0, ge=0, description="price per million completion tokens")
    trust_remote_code: bool = Field(False, description="let transformers run code shipped with the model")

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML 1.1 reads a bare `off` as false: take it as the user meant it
        return "off" if value is False else value
