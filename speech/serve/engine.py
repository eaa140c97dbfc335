"""The served models and how requests reach them: a bounded queue batched across clients, and streams.

Non-streaming requests wait in one bounded queue; a worker thread takes up to ``max_batch`` of them (waiting
``wait_s`` for more after the first) and runs ``Synthesizer.synthesize_batch`` on those of one model, so
concurrent clients are generated together. A full queue is an overload error at once, not a hang.

A stream holds its model for its whole generation (the AR model's KV cache lives on the model), so streams
of one model take turns with each other and with the batches; at most ``max_streams`` run or wait. A stream
whose client goes away is told to stop (``stop``); its generator is closed before the next chunk, which frees
the model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from speech.inference import RequestError, SynthesisRequest, Synthesizer
from speech.serve.errors import OVERLOADED, ApiError

log = logging.getLogger(__name__)
_END = object()


@dataclass
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
        self._locks = {id(s): threading.Lock() for s in synthesizers.values()}
        self.batch_sizes: Counter[int] = Counter()  # requests generated together -> how often
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=queue_size)
        self._streams = threading.BoundedSemaphore(max_streams)
        self._worker = threading.Thread(target=self._work, name="synthesis-batcher", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Lets every queued request finish, then stops the worker."""
        self._queue.put(_END)
        self._worker.join()

    # -------------------------------------------------------------------------------------------- batches
    def submit(self, model: str, request: SynthesisRequest) -> Future:
        """Queues a request; the future gives its ``SynthesisResult`` (or raises its error)."""
        future: Future = Future()
        try:
            self._queue.put_nowait(_Item(model, request, future))
        except queue.Full:
            raise ApiError(
                OVERLOADED, f"the server is busy: {self._queue.maxsize} requests are waiting; retry later"
            ) from None
        return future

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _END:
                return
            items, deadline, ended = [first], time.monotonic() + self.wait_s, False
            while len(items) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _END:
                    ended = True
                    break
                items.append(item)
            for model in dict.fromkeys(item.model for item in items):
                self._run([item for item in items if item.model == model])
            if ended:
                return

    def _run(self, items: list[_Item]) -> None:
        """Generates one model's items together; a request the synthesizer refuses fails alone."""
        synth = self.synthesizers[items[0].model]
        while items:
            try:
                with self._locks[id(synth)]:
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
