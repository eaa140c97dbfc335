"""The served models and how requests reach them: bounded queues batched across clients, for whole
utterances and for streams.

Non-streaming requests wait in one bounded queue; a worker thread takes up to ``max_batch`` of them (waiting
``wait_s`` for more after the first) and runs ``Synthesizer.synthesize_batch`` on those of one model, so
concurrent clients are generated together. A full queue is an overload error at once, not a hang. A request
whose client goes away is cancelled (``Future.cancel``): while it waits it leaves the queue at once, and once
taken into a batch it is dropped before generation starts; a batch that has started runs to its end (the
synthesizer cannot leave a row out midway), and the result of a request whose client left is dropped.

Streams wait in a second queue, taken the same way by a second worker into ``Synthesizer.stream_batch``:
concurrent streams are generated together and each gets its chunks as they are made. At most
``max_streams`` run or wait. A stream whose client goes away is told to stop (``stop``): waiting, it leaves
the queue; generating, its row gets no more flow matching or decoding, and a batch whose rows have all
stopped ends before its next AR step. A batch runs at the pace of the model, not of its slowest reader: each
stream's chunks wait for their client in its own queue.

Both workers take a model's lock while they generate (the AR model's KV cache lives on the model), so
batches and stream batches of one model take turns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from speech.inference import RequestError, SynthesisRequest, Synthesizer
from speech.serve.errors import OVERLOADED, ApiError

log = logging.getLogger(__name__)
POLL_S = 0.05  # how often a stream waiting for its chunks looks at its stop flag
_END = object()  # a stream's last item: no more chunks


@dataclass(eq=False)  # a queue finds an item by identity
class _Item:
    """A non-streaming request; ``future`` gets its ``SynthesisResult``."""

    model: str
    request: SynthesisRequest
    future: Future


@dataclass(eq=False)
class _Stream:
    """A streaming request; ``chunks`` gets its ``(t,)``/``(t, 2)`` chunks, then ``_END`` or an exception."""

    model: str
    request: SynthesisRequest
    chunk_tokens: int
    stop: threading.Event
    chunks: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    ended: bool = False  # its last item (_END or an error) is in ``chunks``


class BatchQueue:
    """A bounded FIFO that one worker thread empties in batches.

    Args:
        run: Called by the worker with each batch (a non-empty list of items).
        max_batch: Items taken together at most.
        size: Items that may wait; one more is refused with ``ApiError`` 1002 saying ``full``.
        wait_s: How long the worker waits for more items after the first of a batch.
        full: The overload message's end, e.g. ``"64 requests are waiting"``.
        name: The worker thread's name.
    """

    def __init__(
        self, run: Callable[[list], None], *, max_batch: int, size: int, wait_s: float, full: str, name: str
    ) -> None:
        self.run, self.max_batch, self.size, self.wait_s, self.full = run, max_batch, size, wait_s, full
        self._waiting: deque = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    def __len__(self) -> int:
        with self._changed:
            return len(self._waiting)

    def put(self, item) -> None:
        """Queues ``item``; ``ApiError`` 1002 when full or shutting down."""
        with self._changed:
            if self._closing:
                raise ApiError(OVERLOADED, "the server is shutting down; retry on another")
            if len(self._waiting) >= self.size:
                raise ApiError(OVERLOADED, f"the server is busy: {self.full}; retry later")
            self._waiting.append(item)
            self._changed.notify_all()

    def withdraw(self, item) -> bool:
        """Takes ``item`` out of the queue; ``False`` when it is not there (taken into a batch, or done)."""
        with self._changed:
            if item in self._waiting:
                self._waiting.remove(item)
                return True
            return False

    def close(self) -> None:
        """Lets every queued item be run, then stops the worker."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._worker.join()

    def _take(self) -> list | None:
        """Up to ``max_batch`` waiting items, waiting ``wait_s`` for more after the first; ``None`` once
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
            self.run(items)


class Engine:
    """Runs requests on named synthesizers.

    Args:
        synthesizers: Model name -> ``Synthesizer`` (names may share one).
        max_batch: Requests (or streams) generated together at most.
        queue_size: Non-streaming requests that may wait; one more is refused (``ApiError`` 1002).
        wait_s: How long a worker waits for more requests after the first of a batch.
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
        self.synthesizers, self.max_batch = synthesizers, max_batch
        self._locks = {id(s): threading.Lock() for s in synthesizers.values()}
        self.batch_sizes: Counter[int] = Counter()  # requests generated together -> how often
        self.stream_batch_sizes: Counter[int] = Counter()  # streams generated together -> how often
        self._stream_slots = threading.BoundedSemaphore(max_streams)
        self._requests = BatchQueue(
            self._run, max_batch=max_batch, size=queue_size, wait_s=wait_s,
            full=f"{queue_size} requests are waiting", name="synthesis-batcher",
        )  # fmt: skip
        self._streams = BatchQueue(
            self._run_streams, max_batch=max_batch, size=max_streams, wait_s=wait_s,
            full="too many streams", name="stream-batcher",
        )  # fmt: skip

    def close(self) -> None:
        """Lets every queued request and stream finish, then stops the workers."""
        self._requests.close()
        self._streams.close()

    def lock(self, synth: Synthesizer) -> threading.Lock:
        """Held while ``synth`` generates (a batch of requests or of streams)."""
        return self._locks[id(synth)]

    @property
    def waiting(self) -> int:
        """Requests in the queue (not yet taken into a batch)."""
        return len(self._requests)

    # -------------------------------------------------------------------------------------------- batches
    def submit(self, model: str, request: SynthesisRequest) -> Future:
        """Queues a request; the future gives its ``SynthesisResult`` (or raises its error). Cancelling the
        future takes a waiting request out of the queue."""
        item = _Item(model, request, Future())
        self._requests.put(item)
        item.future.add_done_callback(lambda f: f.cancelled() and self._requests.withdraw(item))
        return item.future

    def _run(self, items: list[_Item]) -> None:
        for model in dict.fromkeys(item.model for item in items):
            self._run_model([item for item in items if item.model == model])

    def _run_model(self, items: list[_Item]) -> None:
        """Generates one model's items together; a request the synthesizer refuses fails alone, and one
        cancelled (its client left) before the model is free is dropped."""
        synth = self.synthesizers[items[0].model]

        def generate(rows: list[_Item]) -> None:
            self.batch_sizes[len(rows)] += 1
            results = synth.synthesize_batch([i.request for i in rows], batch_size=self.max_batch)
            for item, result in zip(rows, results, strict=True):
                item.future.set_result(result)

        with self._locks[id(synth)]:
            items = [item for item in items if item.future.set_running_or_notify_cancel()]
            _refused_alone(items, generate, lambda item, err: item.future.set_exception(err), "batch")

    # -------------------------------------------------------------------------------------------- streams
    def stream(
        self, model: str, request: SynthesisRequest, chunk_tokens: int, stop: threading.Event
    ) -> Iterator[np.ndarray]:
        """The request's chunks as its stream batch makes them; ends early once ``stop`` is set (closing the
        iterator early sets it). Queued at the first ``next``.

        Raises:
            ApiError: 1002, too many streams or shutting down.
            RequestError: the request is invalid (no batch index).
        """
        if not self._stream_slots.acquire(blocking=False):
            raise ApiError(OVERLOADED, "the server is busy: too many streams; retry later")
        try:
            item = _Stream(model, request, chunk_tokens, stop)
            self._streams.put(item)
            while True:
                try:
                    got = item.chunks.get(timeout=POLL_S)
                except queue.Empty:
                    if stop.is_set():  # its client left: out of the queue, or its batch drops its row
                        self._streams.withdraw(item)
                        return
                    continue
                if got is _END:
                    return
                if isinstance(got, Exception):
                    raise got
                try:
                    yield got
                except GeneratorExit:  # closed early: its batch drops its row
                    stop.set()
                    raise
        finally:
            self._stream_slots.release()

    def _run_streams(self, items: list[_Stream]) -> None:
        for key in dict.fromkeys((item.model, item.chunk_tokens) for item in items):
            self._run_stream_batch([item for item in items if (item.model, item.chunk_tokens) == key])

    def _run_stream_batch(self, items: list[_Stream]) -> None:
        """Streams one model's items together; a request the synthesizer refuses fails alone."""
        synth = self.synthesizers[items[0].model]

        def generate(rows: list[_Stream]) -> None:
            self.stream_batch_sizes[len(rows)] += 1
            events = synth.stream_batch(
                [item.request for item in rows],
                chunk_tokens=rows[0].chunk_tokens,
                stopped=lambda n: rows[n].stop.is_set(),
            )
            for index, audio, last in events:
                if audio.size:
                    rows[index].chunks.put(audio)
                if last:
                    end(rows[index], _END)

        def end(item: _Stream, last: object) -> None:  # _END or the error; once per stream
            if not item.ended:
                item.ended = True
                item.chunks.put(last)

        with self._locks[id(synth)]:
            items = [item for item in items if not item.stop.is_set()]
            _refused_alone(items, generate, end, "stream batch")
            for item in items:
                end(item, _END)  # the stopped ones


def _refused_alone(items: list, generate: Callable[[list], None], fail: Callable, what: str) -> None:
    """``generate(items)``; a request the synthesizer refuses (``RequestError`` with its index, raised before
    anything is made) gets ``fail(item, error)`` alone and the others are generated again. Any other error
    goes to every item (``fail``), logged; the worker goes on. ``items`` keeps the ones not refused."""
    while items:
        try:
            generate(items)
            return
        except RequestError as err:
            if err.index is not None:
                fail(items.pop(err.index), err.for_request(None))
                continue
            failure: Exception = err
        except Exception as err:
            log.exception("%s of %d failed", what, len(items))
            failure = err
        for item in items:
            fail(item, failure)
        return
