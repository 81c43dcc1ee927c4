"""Continuous batching for the hf backend: a request joins the running batch at the next decoding step and
leaves it at the step it finishes, or as soon as its client goes away. A short request is never stuck behind
a long one, and a finished row costs nothing (a static batch keeps decoding it until its longest row ends).

One thread owns the model. Each round it drops the rows whose request was cancelled, admits waiting
requests while the batch has room (prefilled together, left-padded, their KV cache spliced into the running
one), then runs one decoding step for every row and picks each row's next token under its own request's
sampling options and random generator. The running cache is left-padded: rows that join late are padded on
the left, and the columns no row needs any more are cut away when rows leave.

What comes out is what ``HFBackend.chat`` gives for the same prompt (the same cut at end-of-turn tokens and
stop strings, the same logprobs); greedy text is the same token for token, up to the float noise of
batching that ``HFBackend`` has too.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from dataflywheel.models.base import ChatResult, Sampling
from dataflywheel.models.hf import HFBackend, cache_of
from dataflywheel.serve.batcher import Busy

OnText = Callable[[int, str], None]  # (choice index, new text) from the decoding thread


class Cancelled(Exception):
    """The request was cancelled (its client went away) before it finished."""


class Handle:
    """One submitted prompt: ``future`` resolves to its :class:`ChatResult`; ``cancel()`` takes its rows out
    of the batch at the next step. ``on_text`` (optional) receives text as it is decoded, per choice, never
    text that a stop string could still cut away."""

    def __init__(self, ids: list[int], sampling: Sampling, on_text: OnText | None = None):
        self.ids, self.sampling, self.on_text = ids, sampling, on_text
        self.future: Future = Future()
        self.cancelled = False
        self.rows: list[_Row] = []
        self.submitted = time.monotonic()
        self.stop_ids: frozenset[int] = frozenset()  # tokens holding a one-character stop (set on admission)
        self.stop_strings = [c for c in sampling.stop or [] if len(c) > 1]
        self.matchers = None  # RowMatchers of the request's choices, when it asks for a constraint

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Row:
    handle: Handle
    index: int  # which of the request's n choices
    generator: object  # torch.Generator of the request (its children share it, in order)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sent: int = 0  # characters handed to on_text
    done: bool = False


class Decoder:
    """Continuous batching over an :class:`HFBackend`'s model (see the module's docstring).

    ``max_batch`` rows decode together at most (a request with n choices takes n); also at most
    ``backend.generate_tokens`` of prompt plus new tokens in flight, which bounds the KV cache. At most
    ``max_queue`` requests wait; one more is refused with :class:`Busy`. ``lock`` is held for each forward
    pass, so another thread (scoring, embedding) can use the same model between steps."""

    def __init__(
        self,
        backend: HFBackend,
        max_batch: int = 64,
        max_queue: int = 256,
        lock: threading.Lock | None = None,
    ):
        self.backend, self.max_batch, self.max_queue = backend, max_batch, max_queue
        self.torch = backend._torch
        self.model = backend.generator
        self.lock = lock or threading.Lock()
        self.waiting: deque[Handle] = deque()
        self.cond = threading.Condition()
        self.rows: list[_Row] = []
        self.cache = None  # the running DynamicCache, left-padded
        self.mask = None  # (rows, cache length) 1 where a row has a token
        self.eos = backend._eos_ids()
        self.request_seconds = 1.0  # running mean of one request's time, for Retry-After
        self.steps = 0
        self.cache_arg = backend._cache_kwarg()
        self._check_cache()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="flywheel-decoder")
        self.thread.start()

    def _check_cache(self) -> None:
        """Splicing and trimming caches by hand is right for plain per-layer key/value tensors; a model whose
        cache is anything else (sliding windows, quantized, static) cannot run here."""
        from transformers.cache_utils import DynamicLayer

        torch = self.torch
        with self.lock, torch.inference_mode():
            ids = torch.tensor([[self.backend.tokenizer.pad_token_id]], device=self.backend.device)
            cache = cache_of(self.model(input_ids=ids, use_cache=True))
        kinds = {type(layer).__name__ for layer in getattr(cache, "layers", [None])}
        if kinds != {DynamicLayer.__name__}:
            raise TypeError(f"continuous batching needs a plain dynamic KV cache; this model's is {kinds}")

    # ------------------------------------------------------------------ requests
    def submit(self, ids: list[int], sampling: Sampling, on_text: OnText | None = None) -> Handle:
        """Queue one prompt (token ids); raises :class:`Busy` when ``max_queue`` requests already wait."""
        handle = Handle(ids, sampling, on_text)
        if sampling.constraint is not None:  # compiled here: a bad grammar fails its own request only
            handle.matchers = self.backend.row_matchers(sampling.constraint, sampling.n)
        limit = self.backend.max_length - sampling.max_tokens
        if len(ids) > limit:
            message = (
                f"prompt of {len(ids)} tokens + max_tokens {sampling.max_tokens} exceeds the model's "
                f"{self.backend.max_length}"
            )
            handle.future.set_result(ChatResult(prompt_tokens=len(ids), error=message))
            return handle
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                rounds = -(-len(self.waiting) // self.max_batch)
                raise Busy(max(1, round(rounds * self.request_seconds)))
            self.waiting.append(handle)
            self.cond.notify()
        return handle

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.rows:
                    self.cond.wait()
            try:
                self._round()
            except Exception as e:  # a failed forward (out of memory, ...): its requests fail, the loop lives
                for handle in {id(r.handle): r.handle for r in self.rows}.values():
                    if not handle.future.done():
                        handle.future.set_exception(e)
                self.rows, self.cache, self.mask = [], None, None

    def _round(self) -> None:
        self._leave([r for r in self.rows if r.handle.cancelled])
        self._admit()
        if self.rows:
            self._step()

    def _admit(self) -> None:
        """Take waiting requests while rows and tokens allow (always one into an empty batch)."""
        budget = self.backend.generate_tokens
        in_flight = sum(len(r.handle.ids) + r.handle.sampling.max_tokens for r in self.rows)
        joining: list[Handle] = []
        with self.cond:
            while self.waiting:
                h = self.waiting[0]
                if h.cancelled:
                    self.waiting.popleft()
                    h.future.set_exception(Cancelled())
                    continue
                rows = len(self.rows) + sum(j.sampling.n for j in joining) + h.sampling.n
                tokens = in_flight + h.sampling.n * (len(h.ids) + h.sampling.max_tokens)
                if (self.rows or joining) and (rows > self.max_batch or tokens > budget):
                    break
                joining.append(self.waiting.popleft())
                in_flight = tokens
        if joining:
            self._prefill(joining)

    def _prefill(self, handles: list[Handle]) -> None:
        torch = self.torch
        device = self.backend.device
        width = max(len(h.ids) for h in handles)
        pad = self.backend.tokenizer.pad_token_id
        ids = torch.full((len(handles), width), pad, dtype=torch.long)
        mask = torch.zeros((len(handles), width), dtype=torch.long)
        for i, h in enumerate(handles):
            ids[i, width - len(h.ids) :] = torch.tensor(h.ids)
            mask[i, width - len(h.ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.lock, torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                logits_to_keep=1,
            )
        cache, logits = cache_of(out), out.logits[:, -1, :]
        repeats = torch.tensor([h.sampling.n for h in handles])
        if int(repeats.max()) > 1:  # n choices: the prompt's cache row once per choice
            index = torch.repeat_interleave(torch.arange(len(handles)), repeats).to(device)
            cache.batch_select_indices(index)
            logits, mask = logits[index], mask[index.cpu()]
        new_rows = []
        for h in handles:
            h.stop_ids = self.backend._tokens_containing([c for c in h.sampling.stop or [] if len(c) == 1])
            seed = h.sampling.seed if h.sampling.seed is not None else secrets.randbits(63)
            generator = torch.Generator(device=device).manual_seed(seed)
            h.rows = [_Row(h, j, generator) for j in range(h.sampling.n)]
            new_rows += h.rows
        self._splice(cache, mask.to(device))
        self.rows += new_rows
        self._choose(new_rows, logits)

    def _splice(self, cache, mask) -> None:
        """Append a prefilled group's cache rows to the running cache, left-padding the shorter side."""
        F = self.torch.nn.functional
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        length = max(self.mask.shape[1], mask.shape[1])

        def left(x, dim_from_end):  # pad dimension -dim_from_end on the left up to `length`
            missing = length - x.shape[-dim_from_end]
            if not missing:
                return x
            return F.pad(x, (0, 0) * (dim_from_end - 1) + (missing, 0))

        for running, joining in zip(self.cache.layers, cache.layers, strict=True):
            running.keys = self.torch.cat([left(running.keys, 2), left(joining.keys, 2)])
            running.values = self.torch.cat([left(running.values, 2), left(joining.values, 2)])
        self.mask = self.torch.cat([left(self.mask, 1), left(mask, 1)])

    def _step(self) -> None:
        torch = self.torch
        device = self.backend.device
        last = torch.tensor([[r.tokens[-1]] for r in self.rows], device=device)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        with self.lock, torch.inference_mode():
            out = self.model(
                input_ids=last,
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                **{self.cache_arg: self.cache},
            )
        self.steps += 1
        self._choose(list(self.rows), out.logits[:, -1, :])

    # ------------------------------------------------------------------ tokens
    def _choose(self, rows: list[_Row], logits) -> None:
        """Each row's next token under its request's options, then every finished row leaves."""
        torch = self.torch
        raw = logits = logits.float()  # log-probabilities are the model's own, as in process
        constrained: dict[int, list[int]] = {}  # handle -> positions of its rows in ``rows``
        for i, r in enumerate(rows):
            if r.handle.matchers is not None:
                constrained.setdefault(id(r.handle), []).append(i)
        if constrained:  # a normal tensor: the forward pass's output may not be changed in place
            logits = logits.clone()
        for positions in constrained.values():  # disallowed tokens to -inf before picking
            matchers = rows[positions[0]].handle.matchers
            logits[positions] = matchers.apply(logits[positions], [rows[i].index for i in positions])
        chosen = logits.argmax(-1)
        sampled = [i for i, r in enumerate(rows) if r.handle.sampling.temperature > 0]
        for i in sampled:  # one row at a time: each request draws from its own generator
            s = rows[i].handle.sampling
            scores = logits[i] / s.temperature
            if s.top_p < 1:  # the nucleus: the smallest set of tokens whose mass reaches top_p
                probs, order = scores.softmax(-1).sort(descending=True)
                outside = probs.cumsum(-1) - probs >= s.top_p
                scores = scores.clone()
                scores[order[outside]] = float("-inf")
            chosen[i] = torch.multinomial(scores.softmax(-1), 1, generator=rows[i].generator)[0]
        wanted = [i for i, r in enumerate(rows) if r.handle.sampling.logprobs]
        lps: dict[int, float] = {}
        if wanted:
            index = torch.tensor(wanted, device=logits.device)
            picked = raw[index].log_softmax(-1).gather(-1, chosen[index, None]).squeeze(-1).tolist()
            lps = dict(zip(wanted, picked, strict=True))
        tokens = chosen.tolist()
        finished = []
        for i, row in enumerate(rows):
            row.tokens.append(tokens[i])
            if row.handle.matchers is not None:
                row.handle.matchers.consume_row(row.index, tokens[i])
            if i in lps:
                row.logprobs.append(lps[i])
            if self._finished(row):
                finished.append(row)
            elif row.handle.on_text is not None:
                self._stream(row)
        self._leave(finished, done=True)

    def _finished(self, row: _Row) -> bool:
        h = row.handle
        token = row.tokens[-1]
        if token in self.eos or token in h.stop_ids or len(row.tokens) >= h.sampling.max_tokens:
            return True
        if h.stop_strings:
            text = self.backend.tokenizer.decode(row.tokens, skip_special_tokens=True)
            return any(c in text for c in h.stop_strings)
        return False

    def _stream(self, row: _Row) -> None:
        text = self.backend.tokenizer.decode(row.tokens, skip_special_tokens=True)
        # held back: a stop string may still complete over the last characters
        safe = len(text) - max((len(c) - 1 for c in row.handle.stop_strings), default=0)
        while safe > row.sent and text[safe - 1] == "\ufffd":  # half of a multi-byte character
            safe -= 1
        if safe > row.sent:
            row.handle.on_text(row.index, text[row.sent : safe])
            row.sent = safe

    def _leave(self, rows: list[_Row], done: bool = False) -> None:
        """Take rows out of the batch (cache rows, mask rows, then columns no row uses any more)."""
        if not rows:
            return
        torch = self.torch
        for row in rows:
            row.done = True
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if keep:
            index = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            first = int(self.mask.any(0).int().argmax())
            if first:
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
                self.mask = self.mask[:, first:]
            self.rows = [self.rows[i] for i in keep]
        else:
            self.rows, self.cache, self.mask = [], None, None
        for handle in {id(r.handle): r.handle for r in rows}.values():
            if handle.future.done():
                continue
            if handle.cancelled:
                for r in handle.rows:
                    r.done = True
                handle.future.set_exception(Cancelled())
            elif done and all(r.done for r in handle.rows):
                self._resolve(handle)

    def _resolve(self, handle: Handle) -> None:
        torch = self.torch
        s = handle.sampling
        complete = handle.matchers.complete() if handle.matchers is not None else [False] * s.n
        completions = [
            self.backend._completion(
                torch.tensor(r.tokens),
                torch.tensor(r.logprobs) if s.logprobs else None,
                s,
                self.eos,
                handle.stop_ids,
                complete[r.index],
            )
            for r in handle.rows
        ]
        seconds = time.monotonic() - handle.submitted
        self.request_seconds = 0.9 * self.request_seconds + 0.1 * seconds
        handle.future.set_result(ChatResult(completions, prompt_tokens=len(handle.ids)))
