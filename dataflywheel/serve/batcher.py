"""Dynamic batching: concurrent requests that can share a forward pass are run as one backend call."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Batcher:
    """One worker thread owns the model; requests with the same key are grouped (up to `max_batch`,
    waiting at most `max_wait_s` for company), run together, and their futures resolved."""

    def __init__(
        self, run: Callable[[str, list[Any]], list[Any]], max_batch: int = 16, max_wait_s: float = 0.01
    ):
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="flywheel-batcher")
        self.thread.start()

    def submit(self, key: str, item: Any) -> Future:
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
            try:
                results = self.run(key, [g[1] for g in group])
                for (_, _, fut), res in zip(group, results, strict=True):
                    fut.set_result(res)
            except Exception as e:  # the callers get the error; the worker lives on
                for _, _, fut in group:
                    fut.set_exception(e)
