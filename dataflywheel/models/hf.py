"""The `hf` backend: any causal LM that transformers loads, on CPU or CUDA.

Generation batches length-sorted prompts with left padding. Scoring (``logprobs``) batches length-sorted
sequences under a token budget, runs the decoder once, and applies the LM head only at the positions
that predict response tokens: the prompt's logits are never computed. ``embed`` pools the last hidden
layer (mean over tokens, or the last token).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataflywheel.hashing import digest
from dataflywheel.models import embedded, template
from dataflywheel.models.base import (
    CHAT,
    COMPLETE,
    EMBED,
    LOGPROBS,
    Backend,
    ChatResult,
    Completion,
    Conversation,
    LogprobResult,
    ModelError,
    Sampling,
)


def _torch():
    try:
        import torch
    except ImportError:
        raise ModelError(
            "the hf backend needs torch and transformers: pip install 'dataflywheel[models]'"
        ) from None
    return torch


def pick_device(device: str) -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{device}' asked for, but torch sees no CUDA GPU")
    return device


def pick_dtype(dtype: str, device: str):
    torch = _torch()
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype '{dtype}'; valid: auto, float32, bfloat16, float16") from None


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles); emulated bf16 is slower
    than fp32."""
    cpu = _torch().cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in probes)


def _contiguous_input(module, args):
    """The LM head's input made contiguous. Generation's prefill projects only each row's last position,
    a strided (rows, 1, hidden) view; torch's CPU linear multiplies such a view by broadcasting the whole
    (hidden, vocab) weight per row (a bmm over a copied weight): measured for 64 rows x SmolLM2's 49,152
    x 576 head, 5.2 s in bf16 and 0.32 s in fp32, against 0.015 s for the same rows contiguous."""
    return (args[0].contiguous(), *args[1:])


GROUPED_DECODE = "flywheel_grouped_decode"


def grouped_decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for one new token against the KV cache, grouped-query heads sharing their key/value head
    by reshaping the query instead of copying the cache. Eager attention repeats every cached key and
    value ``heads / kv_heads`` times per layer and step (3x for SmolLM2), and torch's CPU flash kernel in
    bf16 is slower than two small matmuls for one query; a prompt's prefill (several queries) goes to
    transformers' SDPA. Registered as a transformers attention implementation for the bf16 CPU decoder."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, q, d = query.shape
    if q > 1 or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    torch = _torch()
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else d**-0.5
    # query heads are ordered kv-head-major (transformers' repeat_kv): (b, kv, group, d) @ (b, kv, d, ctx)
    scores = (
        torch.matmul(query.view(b, kv_heads, heads // kv_heads, d), key.transpose(-1, -2)) * scale
    ).float()
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[2]]  # (b, 1, 1, ctx): broadcast over the group
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # (b, kv, group, d)
    return out.reshape(b, heads, 1, d).transpose(1, 2), None


def _register_grouped_decode() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_DECODE, grouped_decode_attention)
    AttentionMaskInterface.register(GROUPED_DECODE, sdpa_mask)  # SDPA's boolean masks, None when not needed


def pick_generate_dtype(generate_dtype: str, dtype, device: str):
    """The weights generation decodes with: ``auto`` is the scoring dtype itself. ``bfloat16`` for an fp32
    model on a CPU decodes with a bf16 copy: decoding reads every weight once per token, so it is bound by
    memory bandwidth, and half the bytes decoded 1.95x faster on 2 cores with native bf16 (AVX512-BF16 or
    AMX; ``native_cpu_bf16``; BENCHMARKS.md). Not the default: greedy answers then follow bf16 arithmetic,
    which differs from fp32's and varies with how prompts are batched."""
    if generate_dtype == "auto":
        return dtype
    return pick_dtype(generate_dtype, device)


LM_HEAD_CHUNK = 512


def cache_of(out):
    """The KV cache of a forward pass's output, under its transformers 5 name or the older one."""
    return out["cache"] if "cache" in out else out["past_key_values"]


class HFBackend(Backend):
    capabilities = frozenset({CHAT, LOGPROBS, EMBED, COMPLETE})
    name = "hf"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        trust_remote_code: bool = False,
        generate_dtype: str = "auto",
    ):
        torch = _torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = model
        path = embedded.resolve(model) if model.startswith("embedded:") else model
        self.path = str(path)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        # scoring (log-probabilities, NLL, judges' option probabilities) keeps ``dtype``; generation may
        # decode with a lower-precision copy of the weights (see pick_generate_dtype)
        self.generate_dtype = pick_generate_dtype(generate_dtype, self.dtype, self.device)
        self._generator = None
        # Tokens per scoring pass: on CPU, GEMMs of about 1k rows run fastest (measured: 8 x 128 tokens is
        # 1.4x one 128-token sequence; 8 x 512 falls back), a GPU wants far more in flight.
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or (16384 if self.device.startswith("cuda") else 1024)
        # Generation batches: decoding is memory-bound, so more rows per step pay even on CPU (measured on
        # 2 cores, 64 greedy answers of 64 tokens: 64 rows a batch 1.3x 32, 2.5x 16); capped by rows x
        # (prompt + new tokens), which bounds the KV cache for bigger models.
        self.generate_rows = max(batch_size, 64)
        self.generate_tokens = 262144 if self.device.startswith("cuda") else 16384
        self._stop_ids: dict[str, frozenset[int]] = {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=self.dtype, trust_remote_code=trust_remote_code
            )
        except OSError as e:
            raise ModelError(f"cannot load '{model}' with transformers: {e}") from None
        self.model.to(self.device).eval()
        head = self.model.get_output_embeddings()
        if head is not None and not self.device.startswith("cuda"):
            head.register_forward_pre_hook(_contiguous_input)  # copied with the model into the generator
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self._fingerprint: str | None = None
        self._torch = torch

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            files = []
            p = Path(self.path)
            if p.is_dir():
                files = [
                    (f.name, f.stat().st_size, f.stat().st_mtime_ns)
                    for f in sorted(p.iterdir())
                    if f.suffix in (".safetensors", ".bin", ".json", ".jinja", ".model")
                ]
            self._fingerprint = digest(
                "hf",
                self.spec,
                files,
                self.model.config.to_dict(),
                self.tokenizer.chat_template,
                str(self.dtype),
                str(self.generate_dtype),
            )
        return self._fingerprint

    @property
    def generator(self):
        """The model generation decodes with: ``model`` itself, or its weights cast once to
        ``generate_dtype`` (built on first use; the copy costs the weights' size again in memory). A bf16
        copy on CPU decodes with ``grouped_decode_attention`` (``python -m bench.hf_generate
        --decode-steps``, one step on 2 cores, 16 rows x 400 cached tokens: fp32 SDPA 124 ms, bf16 SDPA
        73 ms, bf16 eager 94 ms, bf16 grouped 63 ms; 64 rows x 100: 250 / 128 / 134 / 98 ms)."""
        if self.generate_dtype == self.dtype:
            return self.model
        if self._generator is None:
            import copy

            gen = copy.deepcopy(self.model).to(self.generate_dtype).eval()
            if not self.device.startswith("cuda"):
                _register_grouped_decode()
                gen.set_attn_implementation(GROUPED_DECODE)
            self._generator = gen
        return self._generator

    def generating_with(self, generate_dtype) -> HFBackend:
        """This backend with the same loaded weights, generating with ``generate_dtype`` (a torch dtype or
        its name): no second load, and its own fingerprint, so their answers never share a cache entry."""
        import copy

        view = copy.copy(self)
        if isinstance(generate_dtype, str):
            generate_dtype = pick_generate_dtype(generate_dtype, self.dtype, self.device)
        view.generate_dtype, view._generator, view._fingerprint = generate_dtype, None, None
        return view

    # ------------------------------------------------------------------ templates
    def render(self, conversation: Conversation, generation_prompt: bool = True) -> str:
        return template.render(self.tokenizer, conversation, generation_prompt)

    def assistant_header(self) -> str:
        return template.assistant_header(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return template.encode(self.tokenizer, text)

    def split_ids(self, conversation: Conversation, response: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt (with the assistant header) and of the response that follows it."""
        return self.split_text_ids(self.render(conversation), response)

    def split_text_ids(self, prompt_text: str, response: str) -> tuple[list[int], list[int]]:
        return template.split_ids(self.tokenizer, prompt_text, response)

    # ------------------------------------------------------------------ chat
    def chat(self, conversations: list[Conversation], sampling: Sampling) -> list[ChatResult]:
        return self._generate([self.encode(self.render(c)) for c in conversations], sampling)

    def complete(self, prompts: list[str], sampling: Sampling) -> list[ChatResult]:
        return self._generate([self.encode(p) for p in prompts], sampling)

    def _generate(self, prompts: list[list[int]], sampling: Sampling) -> list[ChatResult]:
        torch = self._torch
        results: list[ChatResult | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        limit = self.max_length - sampling.max_tokens
        ok = []
        for i in order:
            if len(prompts[i]) > limit:
                results[i] = ChatResult(
                    prompt_tokens=len(prompts[i]),
                    error=(
                        f"prompt of {len(prompts[i])} tokens + max_tokens {sampling.max_tokens} exceeds the "
                        f"model's {self.max_length}"
                    ),
                )
            else:
                ok.append(i)
        pad = self.tokenizer.pad_token_id
        token_stops = [s for s in sampling.stop or [] if len(s) == 1]
        string_stops = [s for s in sampling.stop or [] if len(s) > 1]
        eos_ids, stop_ids = self._eos_ids(), self._tokens_containing(token_stops)
        eos = sorted(eos_ids | stop_ids)
        for batch in self._generation_batches(ok, prompts, sampling):
            width = max(len(prompts[i]) for i in batch)
            shared = self._shared_prefix([prompts[i] for i in batch], sampling.n)
            rows = [i for i in batch for _ in range(sampling.n)]  # n samples: the prompt's row repeated
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, i in enumerate(rows):
                # the shared prefix first, then padding, then the rest: every prompt ends where generation
                # starts, and positions follow the mask (a row's padding takes no position)
                ids[row, :shared], mask[row, :shared] = torch.tensor(prompts[i][:shared]), 1
                ids[row, width - len(prompts[i]) + shared :] = torch.tensor(prompts[i][shared:])
                mask[row, width - len(prompts[i]) + shared :] = 1
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            kwargs = dict(
                max_new_tokens=sampling.max_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
                return_dict_in_generate=True,
                output_logits=sampling.logprobs,
            )
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if string_stops:  # one-character stops end generation as stop tokens (above): much cheaper
                kwargs.update(stop_strings=string_stops, tokenizer=self.tokenizer)
            grammar = None
            if sampling.constraint is not None:  # one grammar matcher per row, masking its logits
                grammar = self._grammar_logits(sampling.constraint, len(rows), width)
                kwargs["logits_processor"] = [grammar]
            with torch.inference_mode():
                if shared:  # the prefix's keys and values computed once, copied to every row
                    kwargs[self._cache_kwarg()] = self._prefix_cache(prompts[batch[0]][:shared], len(rows))
                out = self.generator.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs
                )
            new = out.sequences[:, width:].cpu()
            # a reply whose grammar completed on its last allowed token ended, though no end-of-turn
            # token followed: it is whole, not cut at max_tokens
            complete = grammar.complete_after(new) if grammar is not None else [False] * len(rows)
            lps = None
            if sampling.logprobs:
                # step by step: stacking every step's (rows, vocab) logits first would hold several
                # copies of a (rows, new tokens, vocab) tensor (gigabytes for 32 rows x 128 tokens)
                chosen = new.to(out.logits[0].device)
                lps = torch.stack(
                    [
                        step.float().log_softmax(-1).gather(-1, chosen[:, t : t + 1]).squeeze(-1)
                        for t, step in enumerate(out.logits)
                    ],
                    dim=1,
                ).cpu()
            for b, i in enumerate(batch):
                comps = []
                for j in range(sampling.n):
                    k = b * sampling.n + j
                    comps.append(
                        self._completion(
                            new[k], None if lps is None else lps[k], sampling, eos_ids, stop_ids, complete[k]
                        )
                    )
                results[i] = ChatResult(comps, prompt_tokens=len(prompts[i]))
        return results

    def enforces(self, constraint, kind: str = CHAT) -> bool:
        return True  # llguidance masks the logits in the decoding loop (models/grammar.py)

    def row_matchers(self, constraint, rows: int):
        """One grammar matcher per generated row, over this tokenizer, every end-of-turn token allowing
        the reply to end once the grammar is complete."""
        from dataflywheel.models.grammar import RowMatchers, ll_tokenizer

        return RowMatchers(ll_tokenizer(self.tokenizer, self._eos_ids()), constraint, rows)

    def _grammar_logits(self, constraint, rows: int, width: int):
        from dataflywheel.models.grammar import GrammarLogits

        return GrammarLogits(self.row_matchers(constraint, rows), width)

    SHARED_PREFIX_MIN = 16

    def _shared_prefix(self, prompts: list[list[int]], n: int) -> int:
        """Tokens every prompt of a batch starts with (a chat template's system prompt, a few-shot
        template's demonstrations; n samples of one prompt share all of it), prefilled once for the whole
        batch; 0 when fewer than ``SHARED_PREFIX_MIN``. Every row keeps at least its last token to feed."""
        if len(prompts) * n < 2:
            return 0
        first, shortest = prompts[0], min(len(p) for p in prompts)
        length = shortest - 1
        for p in prompts[1:]:
            k = 0
            while k < length and p[k] == first[k]:
                k += 1
            length = k
        return length if length >= self.SHARED_PREFIX_MIN else 0

    def _cache_kwarg(self) -> str:
        """transformers 5 renamed generate's and forward's ``past_key_values`` to ``cache`` (the old name
        warns); older releases know only the old one."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _prefix_cache(self, prefix: list[int], rows: int):
        torch = self._torch
        ids = torch.tensor([prefix], device=self.device)
        cache = cache_of(self.generator(input_ids=ids, use_cache=True))
        cache.batch_repeat_interleave(rows)
        return cache

    def _generation_batches(self, order: list[int], prompts: list[list[int]], sampling: Sampling):
        """Prompts (longest first) in batches of at most ``generate_rows`` sequences and
        ``generate_tokens`` tokens of prompt and generation, n completions per prompt counted."""
        batch: list[int] = []
        for i in order:
            rows = (len(batch) + 1) * sampling.n
            width = max([len(prompts[j]) for j in batch] + [len(prompts[i])]) + sampling.max_tokens
            if batch and (rows > self.generate_rows or rows * width > self.generate_tokens):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _tokens_containing(self, chars: list[str]) -> frozenset[int]:
        """Every token whose text contains one of ``chars`` (one-character stop strings), cached."""
        out: set[int] = set()
        for ch in chars:
            if ch not in self._stop_ids:
                vocab = range(len(self.tokenizer))
                texts = self.tokenizer.batch_decode([[i] for i in vocab], skip_special_tokens=True)
                self._stop_ids[ch] = frozenset(i for i, t in zip(vocab, texts, strict=True) if ch in t)
            out |= self._stop_ids[ch]
        return frozenset(out)

    def _completion(
        self, tokens, lps, sampling: Sampling, eos: set[int], stops: frozenset[int], complete: bool = False
    ) -> Completion:
        """One generated sequence cut at its end: an end-of-turn token (dropped) or a token holding a
        one-character stop string (kept; the text is cut at the string). ``complete``: its grammar ended
        on its last token, so running out of tokens did not cut it."""
        ids = tokens.tolist()
        n = len(ids)
        finish = "stop" if complete else "length"
        for pos, t in enumerate(ids):
            if t in eos:
                n, finish = pos, "stop"
                break
            if t in stops:  # a token holding a stop string: keep it, the text is cut at the string below
                n = pos + 1
                break
        text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        if sampling.stop:
            cut = [text.find(s) for s in sampling.stop if s in text]
            if cut:
                text, finish = text[: min(cut)], "stop"
        return Completion(
            text=text,
            finish_reason=finish,
            tokens=n,
            logprobs=None if lps is None else [float(x) for x in lps[:n]],
            token_strs=None if lps is None else self.tokenizer.convert_ids_to_tokens(ids[:n]),
        )

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        ids.add(self.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    # ------------------------------------------------------------------ scoring
    def logprobs(self, conversations: list[Conversation], responses: list[str]) -> list[LogprobResult]:
        return self._logprobs([self.split_ids(c, r) for c, r in zip(conversations, responses, strict=True)])

    def text_logprobs(self, prefixes: list[str], responses: list[str]) -> list[LogprobResult]:
        """Like logprobs, for raw text prefixes with no chat template (e.g. an Alpaca-style prompt)."""
        return self._logprobs([self.split_text_ids(p, r) for p, r in zip(prefixes, responses, strict=True)])

    def next_token_logprobs(self, conversations: list[Conversation], options: list[str]) -> list[list[float]]:
        """Log-probability of each option's first token as the next token after the assistant header:
        one forward pass per conversation, however many options (DEITA's and AlpaGasus's score tokens)."""
        torch = self._torch
        first_ids = []
        for opt in options:
            ids = self.encode(opt)
            if not ids:
                raise ModelError(f"option {opt!r} has no tokens")
            first_ids.append(ids[0])
        prompts = [self.encode(self.render(c))[-self.max_length :] for c in conversations]
        out: list[list[float] | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for batch in self._token_batches(order, [len(p) for p in prompts]):
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, : len(prompts[i])] = torch.tensor(prompts[i])
            last = torch.tensor([len(prompts[i]) - 1 for i in batch])
            with torch.inference_mode():  # right padding + causal: the last real position sees no pad
                hidden = self.model.get_decoder()(input_ids=ids.to(self.device)).last_hidden_state
                logits = self.model.get_output_embeddings()(hidden[torch.arange(len(batch)), last]).float()
                lp = logits.log_softmax(-1)[:, first_ids].cpu().tolist()
            for b, i in enumerate(batch):
                out[i] = lp[b]
        return out

    def _logprobs(self, pairs: list[tuple[list[int], list[int]]]) -> list[LogprobResult]:
        results: list[LogprobResult | None] = [None] * len(pairs)
        todo = []
        for i, (p, r) in enumerate(pairs):
            if not r:
                results[i] = LogprobResult(None, "empty response")
            elif len(p) + len(r) > self.max_length:
                results[i] = LogprobResult(
                    None, f"{len(p) + len(r)} tokens exceed the model's {self.max_length}"
                )
            else:
                todo.append(i)
        todo.sort(key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for batch in self._token_batches(todo, [len(p) + len(r) for p, r in pairs]):
            for i, lp in zip(batch, self._score_batch([pairs[i] for i in batch]), strict=True):
                results[i] = LogprobResult(lp)
        return results

    def _token_batches(self, order: list[int], lengths: list[int]):
        batch: list[int] = []
        for i in order:  # longest first, so each batch's width is its first sequence's length
            if batch and (len(batch) + 1) * lengths[batch[0]] > self.max_batch_tokens:
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        torch = self._torch
        width = max(len(p) + len(r) for p, r in pairs)
        ids = torch.full((len(pairs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        rows, cols, targets, sizes = [], [], [], []
        for b, (p, r) in enumerate(pairs):  # right padding: positions stay 0..len-1
            seq = p + r
            ids[b, : len(seq)] = torch.tensor(seq)
            # position t predicts token t+1: the response tokens are predicted from len(p)-1 .. len(seq)-2
            # (with no prompt at all the first response token has no context and is not scored)
            span = range(max(len(p) - 1, 0), len(seq) - 1)
            rows += [b] * len(span)
            cols += list(span)
            targets += seq[span.start + 1 : span.stop + 1]
            sizes.append(len(span))
        with torch.inference_mode():
            # Right padding under a causal mask: no real token can see a pad, so no padding mask is needed
            # and attention keeps its fast causal kernel. Pad positions compute values nobody reads.
            hidden = self.model.get_decoder()(input_ids=ids.to(self.device)).last_hidden_state
            picked = hidden[torch.tensor(rows), torch.tensor(cols)]  # (response tokens, hidden)
            tgt = torch.tensor(targets, device=picked.device)
            head = self.model.get_output_embeddings()
            scale = getattr(self.model.config, "final_logit_softcapping", None)
            parts = []
            for start in range(0, len(tgt), LM_HEAD_CHUNK):  # (chunk, vocab) logits at a time: bounded memory
                logits = head(picked[start : start + LM_HEAD_CHUNK]).float()
                if scale:
                    logits = torch.tanh(logits / scale) * scale
                t = tgt[start : start + LM_HEAD_CHUNK]
                parts.append(logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1))
            lp = torch.cat(parts) if parts else torch.zeros(0)
        out, offset = [], 0
        values = lp.cpu().tolist()
        for n in sizes:
            out.append(values[offset : offset + n])
            offset += n
        return out

    # ------------------------------------------------------------------ embeddings
    def embed(self, texts: list[str], pooling: str = "mean") -> np.ndarray:
        torch = self._torch
        enc = [self.encode(t)[: self.max_length] or [self.tokenizer.pad_token_id] for t in texts]
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
        for batch in self._token_batches(order, [len(e) for e in enc]):
            width = max(len(enc[i]) for i in batch)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, : len(enc[i])] = torch.tensor(enc[i])
                mask[b, : len(enc[i])] = 1
            with torch.inference_mode():  # right padding + causal attention: real positions never see pads
                hidden = self.model.get_decoder()(input_ids=ids.to(self.device)).last_hidden_state.float()
            m = mask.to(hidden.device).unsqueeze(-1).float()
            if pooling == "mean":
                vec = (hidden * m).sum(1) / m.sum(1)
            elif pooling == "last":
                vec = hidden[torch.arange(len(batch)), mask.sum(1) - 1]
            else:
                raise ModelError(f"unknown pooling '{pooling}'; valid: mean, last")
            out[batch] = vec.cpu().numpy()
        return out

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
