"""The `vllm` backend: in-process vLLM on a GPU, behind the same interface as `hf`.

vLLM is imported only when this backend is built; without it, or without a GPU, the error says so.
"""

from __future__ import annotations

from dataflywheel.hashing import digest
from dataflywheel.models import embedded, template
from dataflywheel.models.base import (
    CHAT,
    COMPLETE,
    LOGPROBS,
    Backend,
    ChatResult,
    Completion,
    Conversation,
    LogprobResult,
    ModelError,
    Sampling,
)


def structured_params(constraint) -> dict:
    """vLLM's SamplingParams fields for an output constraint: ``structured_outputs`` (vLLM 0.12 and
    newer) or ``guided_decoding`` (older releases)."""
    if constraint is None:
        return {}
    constraint = constraint.portable()  # parts as one regex (free text bounded in characters)
    k = constraint.kind
    fields = {"json" if k == "json_schema" else k: getattr(constraint, k)}
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**fields)}
    return {"structured_outputs": StructuredOutputsParams(**fields)}


class VLLMBackend(Backend):
    capabilities = frozenset({CHAT, LOGPROBS, COMPLETE})
    name = "vllm"

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
    ):
        try:
            import torch
        except ImportError:
            raise ModelError("the vllm backend needs torch and vllm: pip install vllm") from None
        if not torch.cuda.is_available():
            raise ModelError("the vllm backend needs a CUDA GPU, and torch sees none; use backend: hf on CPU")
        try:
            from vllm import LLM
        except ImportError:
            raise ModelError(
                "the vllm backend needs vllm: pip install vllm (on a machine with a CUDA GPU)"
            ) from None
        self.spec = model
        self.path = str(embedded.resolve(model) if model.startswith("embedded:") else model)
        self.llm = LLM(
            self.path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            trust_remote_code=trust_remote_code,
        )
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def fingerprint(self) -> str:
        return digest("vllm", self.spec, self.path, self.tokenizer.chat_template)

    def enforces(self, constraint, kind: str = CHAT) -> bool:
        return True  # structured outputs (xgrammar or llguidance inside vLLM)

    def chat(self, conversations: list[Conversation], sampling: Sampling) -> list[ChatResult]:
        return self.complete([template.render(self.tokenizer, c) for c in conversations], sampling)

    def complete(self, prompts: list[str], sampling: Sampling) -> list[ChatResult]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=sampling.stop,
            seed=sampling.seed,
            logprobs=0 if sampling.logprobs else None,
            **structured_params(sampling.constraint),
        )
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outs:
            comps = []
            for o in out.outputs:
                lps = None
                if sampling.logprobs and o.logprobs is not None:
                    lps = [step[tok].logprob for step, tok in zip(o.logprobs, o.token_ids, strict=True)]
                comps.append(Completion(o.text, o.finish_reason or "stop", len(o.token_ids), lps))
            results.append(ChatResult(comps, prompt_tokens=len(out.prompt_token_ids)))
        return results

    def logprobs(self, conversations: list[Conversation], responses: list[str]) -> list[LogprobResult]:
        from vllm import SamplingParams

        prompts, starts = [], []
        for conv, resp in zip(conversations, responses, strict=True):
            # the same prompt text and split as the hf backend (an empty conversation is the header)
            head_ids, resp_ids = template.split_ids(
                self.tokenizer, template.render(self.tokenizer, conv), resp
            )
            prompts.append({"prompt_token_ids": head_ids + resp_ids})
            starts.append(len(head_ids))
        params = SamplingParams(max_tokens=1, prompt_logprobs=0)
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out, start, p in zip(outs, starts, prompts, strict=True):
            ids = p["prompt_token_ids"]
            lps = [out.prompt_logprobs[i][ids[i]].logprob for i in range(max(start, 1), len(ids))]
            results.append(LogprobResult(lps))
        return results
