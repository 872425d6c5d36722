"""Micro-batching: requests for one model that arrive together are answered by one predict call.

Each served model owns one worker thread (inference never runs on the event loop, and two
predict calls on one model would only fight over the same cores); waiting requests are grouped
by their options, a full queue is refused at once (docs/serve.md, "How it keeps up"). A group's
call runs under the latest of its requests' deadlines (:func:`rnnkit.budget.until`), so a call
whose callers have all timed out stops within a decode step.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rnnkit import budget


class Busy(Exception):
    """The model's queue is full; the request was not accepted (HTTP 503)."""


@dataclass
class _Request:
    inputs: list[str]
    options: Any
    done: asyncio.Future = field(repr=False)
    until: float | None = None  # time.monotonic() by which its work must stop; None: no limit


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
        """Start the worker on the running event loop (call it from inside the loop)."""
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Cancel the worker and shut its thread down without waiting for a predict call in
        progress."""
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self, inputs: list[str], options: Any, until: float | None = None
    ) -> list[dict[str, Any]]:
        """The outputs for ``inputs``, worked on until ``until`` at most (a ``time.monotonic()``
        value; None: the task's default budget); raises :class:`Busy` when the queue is full
        and :class:`~rnnkit.errors.DeadlineError` when the work ran out of time."""
        done = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Request(inputs, options, done, until))
        except asyncio.QueueFull:
            raise Busy("the model has too many requests waiting; try again shortly") from None
        return await done

    async def run(self, fn: Callable[..., Any], *args: Any, until: float | None = None) -> Any:
        """Run ``fn(*args)`` on the model's worker thread (for streaming, a step at a time),
        under the deadline ``until`` when given. run_in_executor does not carry context
        variables to the thread, so the call runs in a copy of this one's context."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, context.run, _within, until, fn, *args
        )

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
            outputs = await self.run(self.predict, inputs, live[0].options, until=_latest(live))
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


def _within(until: float | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` under the deadline ``until`` (None: whatever is in force)."""
    if until is None:
        return fn(*args)
    with budget.until(until):
        return fn(*args)


def _latest(requests: list[_Request]) -> float | None:
    """The deadline of a group: the latest of its requests' (None if one has none), so that
    no request in it is stopped before its own time is up."""
    ends = [r.until for r in requests]
    return None if None in ends else max(ends)  # type: ignore[type-var]


def _by_options(requests: list[_Request]) -> list[list[_Request]]:
    """Requests grouped by equal options, in arrival order of each group's first request."""
    groups: dict[str, list[_Request]] = {}
    for r in requests:
        key = json.dumps(dataclasses.asdict(r.options), sort_keys=True)
        groups.setdefault(key, []).append(r)
    return list(groups.values())
