"""Dynamic batching: concurrent requests that can share a forward pass are run as one backend call."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Busy(Exception):
    """The queue is full: the caller should come back after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"server busy: {retry_after} s")
        self.retry_after = retry_after


class Batcher:
    """One worker thread owns the model; requests with the same key are grouped (up to `max_batch`,
    waiting at most `max_wait_s` for company), run together, and their futures resolved.

    At most ``max_queue`` requests wait; one more is refused with :class:`Busy` (the server answers 429
    with Retry-After, estimated from the recent seconds per batch). A request whose future was cancelled
    (its client went away) before its batch started is never run."""

    def __init__(
        self,
        run: Callable[[str, list[Any]], list[Any]],
        max_batch: int = 16,
        max_wait_s: float = 0.01,
        max_queue: int = 256,
    ):
        self.run, self.max_batch, self.max_wait_s, self.max_queue = run, max_batch, max_wait_s, max_queue
        self.queue: queue.Queue = queue.Queue()
        self.waiting = 0  # submitted, not yet started
        self.lock = threading.Lock()
        self.batch_seconds = 1.0  # a running estimate of one batch's time
        self.skipped = 0  # cancelled before they ran
        self.thread = threading.Thread(target=self._loop, daemon=True, name="flywheel-batcher")
        self.thread.start()

    def submit(self, key: str, item: Any) -> Future:
        with self.lock:
            if self.waiting >= self.max_queue:
                batches = -(-self.waiting // self.max_batch)
                raise Busy(max(1, round(batches * self.batch_seconds)))
            self.waiting += 1
        fut: Future = Future()
        self.queue.put((key, item, fut))
        return fut

    def _loop(self) -> None:
        pending: list[tuple[str, Any, Future]] = []
        while True:
            if not pending:
                pending.append(self.queue.get())
            key = pending[0][0]
            group = [p for p in pending if p[0] == key][: self.max_batch]
            deadline = time.monotonic() + self.max_wait_s
            while len(group) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    item = self.queue.get(timeout=timeout)
                except queue.Empty:
                    break
                pending.append(item)
                if item[0] == key:
                    group.append(item)
            pending = [p for p in pending if p not in group]
            with self.lock:
                self.waiting -= len(group)
            live = [g for g in group if g[2].set_running_or_notify_cancel()]
            self.skipped += len(group) - len(live)
            if not live:
                continue
            start = time.monotonic()
            try:
                results = self.run(key, [g[1] for g in live])
                for (_, _, fut), res in zip(live, results, strict=True):
                    fut.set_result(res)
            except Exception as e:  # the callers get the error; the worker lives on
                for _, _, fut in live:
                    fut.set_exception(e)
            self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * (time.monotonic() - start)
