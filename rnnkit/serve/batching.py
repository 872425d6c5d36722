"""Micro-batching: requests for one model that arrive together are answered by one predict call.

Each served model owns one worker thread. Inference never runs on the event loop, and one
model never runs two predict calls at once (two would only fight over the same cores). While
the worker is busy, new requests wait in a bounded queue; when it is free, it takes every
waiting request (after a short wait for stragglers), groups them by their options, and runs
each group as one batch. A full queue is refused at once instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Busy(Exception):
    """The model's queue is full; the request was not accepted (HTTP 503)."""


@dataclass
class _Request:
    inputs: list[str]
    options: Any
    done: asyncio.Future = field(repr=False)


class Batcher:
    """Answers ``predict(inputs, options)`` calls for one model, batching those that arrive
    together (``max_batch`` inputs at most per call, ``wait_s`` for stragglers)."""

    def __init__(
        self,
        predict: Callable[[list[str], Any], list[dict[str, Any]]],
        max_batch: int = 64,
        wait_s: float = 0.002,
        max_queue: int = 1024,
        batching: bool = True,
        name: str = "model",
    ):
        self.predict = predict
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.batching = batching
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rnnkit-{name}")
        self.queue: asyncio.Queue[_Request] = asyncio.Queue(max_queue)
        self.worker: asyncio.Task | None = None
        self.held: _Request | None = None  # taken from the queue, left for the next call
        self.calls = 0  # predict calls made, for the benchmark's report

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: list[str], options: Any) -> list[dict[str, Any]]:
        """The outputs for ``inputs``; raises :class:`Busy` when the queue is full."""
        done = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Request(inputs, options, done))
        except asyncio.QueueFull:
            raise Busy("the model has too many requests waiting; try again shortly") from None
        return await done

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the model's worker thread (for streaming, a step at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _serve(self) -> None:
        while True:
            first, self.held = self.held or await self.queue.get(), None
            taken = [first]
            if self.batching:
                taken += await self._gather(len(first.inputs))
            for group in _by_options(taken):
                await self._answer(group)

    async def _gather(self, size: int) -> list[_Request]:
        """More waiting requests, up to ``max_batch`` inputs in all, waiting at most
        ``wait_s`` for ones still on their way."""
        more: list[_Request] = []
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while size < self.max_batch:
            if self.queue.empty():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            else:
                request = self.queue.get_nowait()
            if size + len(request.inputs) > self.max_batch:
                self.held = request  # first in line for the next call, never over the limit
                break
            more.append(request)
            size += len(request.inputs)
        return more

    async def _answer(self, group: list[_Request]) -> None:
        live = [r for r in group if not r.done.done()]  # a timed-out caller has gone
        if not live:
            return
        inputs = [text for r in live for text in r.inputs]
        self.calls += 1
        try:
            outputs = await self.run(self.predict, inputs, live[0].options)
        except Exception as err:  # noqa: BLE001 - every waiting caller hears of it
            for r in live:
                if not r.done.done():
                    r.done.set_exception(err)
            return
        start = 0
        for r in live:
            if not r.done.done():
                r.done.set_result(outputs[start : start + len(r.inputs)])
            start += len(r.inputs)


def _by_options(requests: list[_Request]) -> list[list[_Request]]:
    """Requests grouped by equal options, in arrival order of each group's first request."""
    groups: dict[str, list[_Request]] = {}
    for r in requests:
        key = json.dumps(dataclasses.asdict(r.options), sort_keys=True)
        groups.setdefault(key, []).append(r)
    return list(groups.values())
