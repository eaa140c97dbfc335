"""The served models and how requests reach them: a bounded queue batched across clients, and streams.

Non-streaming requests wait in one bounded queue; a worker thread takes up to ``max_batch`` of them (waiting
``wait_s`` for more after the first) and runs ``Synthesizer.synthesize_batch`` on those of one model, so
concurrent clients are generated together. A full queue is an overload error at once, not a hang. A request
whose client goes away is cancelled (``Future.cancel``): while it waits it leaves the queue at once, and once
taken into a batch it is dropped before generation starts; a batch that has started runs to its end (the
synthesizer cannot leave a row out midway), and the result of a request whose client left is dropped.

A stream holds its model for its whole generation (the AR model's KV cache lives on the model), so streams
of one model take turns with each other and with the batches; at most ``max_streams`` run or wait. A stream
whose client goes away is told to stop (``stop``); its generator is closed before the next chunk, which frees
the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from speech.inference import RequestError, SynthesisRequest, Synthesizer
from speech.serve.errors import OVERLOADED, ApiError

log = logging.getLogger(__name__)


@dataclass(eq=False)  # the queue finds an item by identity
class _Item:
    model: str
    request: SynthesisRequest
    future: Future


class Engine:
    """Runs requests on named synthesizers.

    Args:
        synthesizers: Model name -> ``Synthesizer`` (names may share one).
        max_batch: Requests generated together at most.
        queue_size: Non-streaming requests that may wait; one more is refused (``ApiError`` 1002).
        wait_s: How long the worker waits for more requests after the first of a batch.
        max_streams: Streams that may run or wait at once.
    """

    def __init__(
        self,
        synthesizers: dict[str, Synthesizer],
        *,
        max_batch: int = 8,
        queue_size: int = 64,
        wait_s: float = 0.01,
        max_streams: int = 16,
    ) -> None:
        self.synthesizers, self.max_batch, self.wait_s = synthesizers, max_batch, wait_s
        self.queue_size = queue_size
        self._locks = {id(s): threading.Lock() for s in synthesizers.values()}
        self.batch_sizes: Counter[int] = Counter()  # requests generated together -> how often
        self._waiting: deque[_Item] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._streams = threading.BoundedSemaphore(max_streams)
        self._worker = threading.Thread(target=self._work, name="synthesis-batcher", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Lets every queued request finish, then stops the worker."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._worker.join()

    def lock(self, synth: Synthesizer) -> threading.Lock:
        """Held while ``synth`` generates (a batch or a whole stream)."""
        return self._locks[id(synth)]

    @property
    def waiting(self) -> int:
        """Requests in the queue (not yet taken into a batch)."""
        with self._changed:
            return len(self._waiting)

    # -------------------------------------------------------------------------------------------- batches
    def submit(self, model: str, request: SynthesisRequest) -> Future:
        """Queues a request; the future gives its ``SynthesisResult`` (or raises its error). Cancelling the
        future takes a waiting request out of the queue."""
        future: Future = Future()
        item = _Item(model, request, future)
        with self._changed:
            if self._closing:
                raise ApiError(OVERLOADED, "the server is shutting down; retry on another")
            if len(self._waiting) >= self.queue_size:
                raise ApiError(
                    OVERLOADED, f"the server is busy: {self.queue_size} requests are waiting; retry later"
                )
            self._waiting.append(item)
            self._changed.notify_all()
        future.add_done_callback(lambda f: f.cancelled() and self._withdraw(item))
        return future

    def _withdraw(self, item: _Item) -> None:
        with self._changed:
            if item in self._waiting:
                self._waiting.remove(item)

    def _take(self) -> list[_Item] | None:
        """Up to ``max_batch`` waiting requests, waiting ``wait_s`` for more after the first; ``None`` once
        closing with none left."""
        with self._changed:
            while not self._waiting:
                if self._closing:
                    return None
                self._changed.wait()
            items, deadline = [self._waiting.popleft()], time.monotonic() + self.wait_s
            while len(items) < self.max_batch:
                if self._waiting:
                    items.append(self._waiting.popleft())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closing:
                    break
                self._changed.wait(left)
            return items

    def _work(self) -> None:
        while (items := self._take()) is not None:
            for model in dict.fromkeys(item.model for item in items):
                self._run([item for item in items if item.model == model])

    def _run(self, items: list[_Item]) -> None:
        """Generates one model's items together; a request the synthesizer refuses fails alone, and one
        cancelled (its client left) before the model is free is dropped."""
        synth = self.synthesizers[items[0].model]
        with self._locks[id(synth)]:
            items = [item for item in items if item.future.set_running_or_notify_cancel()]
            while items:
                try:
                    self.batch_sizes[len(items)] += 1
                    results = synth.synthesize_batch([i.request for i in items], batch_size=self.max_batch)
                except RequestError as err:
                    if err.index is not None:
                        items.pop(err.index).future.set_exception(err.for_request(None))
                        continue
                    failure: Exception = err
                except Exception as err:  # every waiting client gets the error, the worker goes on
                    log.exception("batch of %d failed", len(items))
                    failure = err
                else:
                    failure = None
                if failure is not None:
                    for item in items:
                        item.future.set_exception(failure)
                    return
                for item, result in zip(items, results, strict=True):
                    item.future.set_result(result)
                return

    # -------------------------------------------------------------------------------------------- streams
    def stream(
        self, model: str, request: SynthesisRequest, chunk_tokens: int, stop: threading.Event
    ) -> Iterator[np.ndarray]:
        """``Synthesizer.stream`` of the request while holding the model; ends early once ``stop`` is set."""
        if not self._streams.acquire(blocking=False):
            raise ApiError(OVERLOADED, "the server is busy: too many streams; retry later")
        try:
            synth = self.synthesizers[model]
            with self._locks[id(synth)]:
                chunks = synth.stream(request, chunk_tokens=chunk_tokens)
                try:
                    for chunk in chunks:
                        if stop.is_set():
                            return
                        yield chunk
                finally:
                    chunks.close()
        finally:
            self._streams.release()
