"""What both APIs' routes share: the JSON body, queued synthesis and streams, with errors as ``ApiError``."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from speech.inference import RequestError, SynthesisRequest, SynthesisResult, audio_output
from speech.serve.errors import UNKNOWN, ApiError
from speech.serve.server import Server

log = logging.getLogger(__name__)
STREAM_AHEAD = 4  # encoded chunks that wait in the event loop for the client at most


async def json_body(request: Request):
    """The decoded JSON body; a 2013 ``ApiError`` for another content type or malformed JSON."""
    kind = request.headers.get("content-type", "")
    if kind.split(";")[0].strip().lower() != "application/json":
        raise ApiError.invalid("Content-Type", f"must be application/json, got {kind!r}")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError.invalid("body", f"is not valid JSON: {err}") from None


class ClientGone(Exception):
    """The client closed its connection before its audio was ready; there is no one to answer."""


async def synthesize(
    server: Server,
    model: str,
    request: SynthesisRequest,
    names: dict[str, str] | None = None,
    http: Request | None = None,
) -> tuple[SynthesisResult, bytes]:
    """Queues one request for batched generation; its result and encoded bytes. ``names``: how the body
    names the request's fields (``errors.MINIMAX_FIELDS`` by default).

    Raises:
        ClientGone: the client of ``http`` disconnected first; the request was cancelled (it leaves the
            queue, or is dropped before its batch starts; ``Engine``).
    """
    try:
        await run_in_threadpool(server.bind_voices, model, request)
        result = await _unless_gone(asyncio.wrap_future(server.engine.submit(model, request)), http)
        data = await run_in_threadpool(result.to_bytes)
    except RequestError as err:
        raise ApiError.from_request_error(err, names) from err
    except (ValueError, FileNotFoundError) as err:  # unusable reference audio and the like
        raise ApiError.invalid("request", str(err)) from err
    return result, data


async def _unless_gone(result: asyncio.Future, http: Request | None):
    """``await result``, unless the client of ``http`` disconnects first: then ``result`` is cancelled."""
    if http is None:
        return await result
    gone = asyncio.ensure_future(_disconnect(http))
    try:
        await asyncio.wait((result, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not result.done():
        result.cancel()  # cancels the engine's future: it leaves the queue unless it is generating
        log.info("the client left before its audio was made; the request is cancelled")
        raise ClientGone
    return result.result()


async def _disconnect(http: Request) -> None:
    """Returns once the client disconnects (the body has been read: nothing else can arrive)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


class Chunks:
    """Runs a stream in a thread: encoded chunks ``(bytes, samples)``, an exception, or ``None`` (the end).

    At most ``STREAM_AHEAD`` encoded chunks wait in the event loop for the client; the engine's batch does not
    wait for a slow reader (its chunks wait in the engine), and ``stop`` (a disconnect) ends the stream's row
    in the batch. Create it in the event loop.
    """

    def __init__(self, server: Server, model: str, request: SynthesisRequest) -> None:
        self.stop, self._room = threading.Event(), threading.Semaphore(STREAM_AHEAD)
        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        audio = request.audio
        stream = server.engine.stream(model, request, server.chunk_tokens, self.stop)

        def produce() -> None:
            try:
                server.bind_voices(model, request)  # before the stream's first step reads the request
                for chunk in stream:
                    data = audio_output.encode(chunk, audio.sample_rate, audio.format, audio.bitrate)
                    if not self._put((data, chunk.shape[0])):
                        return
                self._put(None)
            except Exception as err:  # handed to the client as its error
                self._put(err)
            finally:
                stream.close()  # ends the synthesizer's stream and frees the model now

        threading.Thread(target=produce, name="synthesis-stream", daemon=True).start()

    def _put(self, item) -> bool:
        """Hands ``item`` to the event loop once there is room, unless ``stop`` is set first (``False``)."""
        while not self._room.acquire(timeout=0.05):
            if self.stop.is_set():
                return False
        if self.stop.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is gone
            return False
        return True

    async def next(self):
        item = await self._queue.get()
        self._room.release()
        return item


def as_api_error(err: Exception, names: dict[str, str] | None = None) -> ApiError:
    """The ``ApiError`` a client gets for an exception of synthesis (an internal one is logged); ``names``
    as in :func:`synthesize`."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, RequestError):
        return ApiError.from_request_error(err, names)
    if isinstance(err, (ValueError, FileNotFoundError)):
        return ApiError.invalid("request", str(err))
    log.error("stream failed", exc_info=err)
    return ApiError(UNKNOWN, "internal error while streaming")
