"""The FastAPI app: MiniMax T2A v2 and voice routes, the seed's ``/v3`` routes, OpenAI's ``/v1/audio/speech``.

MiniMax routes answer every error as MiniMax does, HTTP 200 with ``base_resp.status_code`` (1004 auth, 2013
invalid params naming the field, 1002 overloaded, 1000 an internal error whose traceback is only logged);
the OpenAI route answers with HTTP 400/401/429 and ``{"error": {...}}`` (``speech.serve.openai``).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from speech.inference import RequestError, SynthesisRequest
from speech.serve import openai
from speech.serve.common import Chunks, ClientGone, as_api_error, json_body, synthesize
from speech.serve.errors import NOT_AVAILABLE, UNKNOWN, ApiError, success
from speech.serve.minimax import T2ARequest, extra_info, parse_t2a
from speech.serve.outputs import MEDIA_TYPES
from speech.serve.server import Server

log = logging.getLogger(__name__)
FORM_OVERHEAD = 64 * 1024  # bytes of a multipart body besides the file: boundaries, part headers, purpose
CLIENT_GONE = 499  # nginx's "client closed request": logged, never received
SEED_ROUTES = {"turbo": "speech-02-turbo", "hd": "speech-02-hd"}
VOICE_TYPES = ("system", "voice_cloning", "all")


def create_app(server: Server) -> FastAPI:
    """The app over a built ``Server`` (``server.build_server``); shutting the app down closes it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await run_in_threadpool(server.close)  # queued requests finish first

    app = FastAPI(title="Speech-02 server", lifespan=lifespan)
    app.state.server = server
    minimax = functools.partial(_minimax, server)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": server.models}

    @app.get("/v1/models")
    async def models(request: Request):
        async def run(_):
            data = [{"id": name, "object": "model", "owned_by": "self-hosted"} for name in server.models]
            return {"object": "list", "data": data}

        return await minimax(request, run, body=False)

    @app.post("/v1/t2a_v2")
    async def t2a_v2(request: Request):
        return await minimax(request, lambda body: _t2a(server, request, body, None, seed=False))

    @app.post("/v3/minimax-speech-02-{variant}")
    async def t2a_v3(variant: str, request: Request):
        if variant not in SEED_ROUTES:
            error = ApiError(NOT_AVAILABLE, f"no route for {variant!r}; served: {list(SEED_ROUTES)}")
            return JSONResponse({"base_resp": error.base_resp()})
        model = SEED_ROUTES[variant]
        return await minimax(request, lambda body: _t2a(server, request, body, model, seed=True))

    @app.get("/v1/audio/files/{name}")
    async def audio_file(name: str):
        data = await run_in_threadpool(server.files.read, name)
        if data is None:
            return JSONResponse({"error": "no such audio: it expired or never existed"}, status_code=404)
        return Response(data, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])

    @app.post("/v1/files/upload")
    async def upload(request: Request):
        async def run(_):
            form = await _form(request, server.voices.limits.max_bytes)
            try:
                file, purpose = form.get("file"), form.get("purpose")
                if file is None or isinstance(file, str):
                    raise ApiError.invalid("file", "is required: a multipart file field")
                data = await file.read(server.voices.limits.max_bytes + 1)
            finally:
                await form.close()
            entry = await run_in_threadpool(server.voices.upload, file.filename, data, purpose)
            return {"file": entry}

        return await minimax(request, run, body=False)

    @app.get("/v1/files/retrieve")
    async def retrieve(request: Request):
        async def run(_):
            return {"file": server.voices.file(request.query_params.get("file_id"))}

        return await minimax(request, run, body=False)

    @app.post("/v1/voice_clone")
    async def voice_clone(request: Request):
        return await minimax(request, lambda body: _clone(server, request, body))

    @app.post("/v1/get_voice")
    async def get_voice(request: Request):
        return await minimax(request, lambda body: _list_voices(server, body))

    @app.post("/v1/delete_voice")
    async def delete_voice(request: Request):
        async def run(body):
            voice_id = _dict(body).get("voice_id")
            await run_in_threadpool(server.voices.delete, voice_id)
            return {"voice_id": voice_id, "created_time": None}

        return await minimax(request, run)

    @app.post("/v1/voice_design")
    async def voice_design(request: Request):
        async def run(_):
            raise ApiError(NOT_AVAILABLE, "voice design is not available on this server")

        return await minimax(request, run)

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        return await openai.speech(server, request)

    return app


# ------------------------------------------------------------------------------------------------- plumbing
async def _minimax(
    server: Server, request: Request, handler: Callable[[object], Awaitable], body: bool = True
) -> Response:
    """Auth, the JSON body, then ``handler(body)``; its dict gets ``base_resp`` success, errors their code."""
    trace_id = uuid.uuid4().hex
    try:
        server.check_auth(request.headers.get("authorization"))
        reply = await handler(await json_body(request) if body else None)
    except ApiError as err:
        reply = {"base_resp": err.base_resp()}
    except ClientGone:
        return Response(status_code=CLIENT_GONE)
    except Exception:
        log.exception("internal error, trace_id %s", trace_id)
        reply = {"base_resp": ApiError(UNKNOWN, f"internal error (trace_id {trace_id})").base_resp()}
    if isinstance(reply, Response):
        return reply
    reply.setdefault("trace_id", trace_id)
    reply.setdefault("base_resp", success())
    return JSONResponse(reply)


class _TooLarge(Exception):
    pass


async def _form(request: Request, max_bytes: int):
    """The multipart form of an upload, refused as it arrives once it is larger than a ``max_bytes`` file
    could make it: at once by its Content-Length, else when the bytes received pass that (a chunked body).
    The rest of a refused body is read and dropped by the server, so the client gets the answer."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError.invalid("Content-Type", "must be multipart/form-data with the fields file and purpose")
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        problem = f"must be at most {max_bytes} bytes; the request body is {declared} bytes (Content-Length)"
        raise ApiError.invalid("file", problem)
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _TooLarge
        return message

    try:
        return await Request(request.scope, receive).form(max_files=2, max_fields=8)
    except _TooLarge:
        raise ApiError.invalid(
            "file", f"must be at most {max_bytes} bytes; the request body passed {received} bytes, refused"
        ) from None
    except HTTPException as err:  # starlette's answer to malformed multipart
        raise ApiError.invalid("body", f"is not valid multipart/form-data: {err.detail}") from None


def _dict(body) -> dict:
    if not isinstance(body, dict):
        raise ApiError.invalid("body", f"must be a JSON object, got {type(body).__name__}")
    return body


# --------------------------------------------------------------------------------------------------- T2A
async def _t2a(server: Server, http: Request, body, model: str | None, seed: bool):
    t2a = parse_t2a(body, server.voices, server.sampling, server.language, model)
    server.check_model(t2a.model)
    if t2a.stream:
        return await _t2a_stream(server, t2a, seed)
    result, data = await synthesize(server, t2a.model, t2a.request, http=http)
    audio = data.hex()
    if t2a.output_format == "url":
        name = await run_in_threadpool(server.files.put, data, t2a.request.audio.format)
        audio = f"{str(http.base_url).rstrip('/')}/v1/audio/files/{name}"
    if seed:
        return {"audio": audio, "status": 2}
    info = extra_info(t2a, result.audio.shape[0], result.sample_rate, len(data), result.bitrate)
    return {"data": {"audio": audio, "status": 2}, "extra_info": info}


async def _t2a_stream(server: Server, t2a: T2ARequest, seed: bool) -> Response:
    """Server-sent events: status-1 chunks as they are made, then status 2 with the whole audio."""
    chunks = Chunks(server, t2a.model, t2a.request)
    first = await chunks.next()
    if isinstance(first, Exception):
        raise as_api_error(first)
    trace_id = uuid.uuid4().hex

    async def events() -> AsyncIterator[bytes]:
        pieces, samples, item = [], 0, first
        try:
            while isinstance(item, tuple):
                data, n = item
                pieces.append(data)
                samples += n
                event = {"audio": data.hex(), "status": 1}
                yield _sse(event if seed else {"data": event, "trace_id": trace_id, "base_resp": success()})
                item = await chunks.next()
            if isinstance(item, Exception):
                yield _sse({"trace_id": trace_id, "base_resp": as_api_error(item).base_resp()})
                return
            whole = b"".join(pieces)
            if seed:
                yield _sse({"status": 2})
                return
            audio = "" if t2a.exclude_aggregated_audio else whole.hex()
            rate = t2a.request.audio.sample_rate
            info = extra_info(t2a, samples, rate, len(whole), t2a.request.audio.bitrate)
            final = {"data": {"audio": audio, "status": 2}, "extra_info": info}
            yield _sse({**final, "trace_id": trace_id, "base_resp": success()})
        finally:
            chunks.stop.set()  # the client went away or the stream ended: generation stops

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


# ------------------------------------------------------------------------------------------------ voices
async def _clone(server: Server, http: Request, body):
    body = _dict(body)
    voice_id, file_id, text = body.get("voice_id"), body.get("file_id"), body.get("text")
    demo = None
    if text is not None:  # checked before anything is stored
        model = server.check_model(body.get("model") or server.models[0])
        reference = str(server.voices.upload_path(file_id))
        demo = SynthesisRequest(text, reference=reference, language=server.language, sampling=server.sampling)
        demo.audio.format, demo.audio.sample_rate, demo.audio.bitrate = "mp3", 32000, 128000
        try:
            demo.validate()
        except RequestError as err:
            raise ApiError.from_request_error(err) from err
    voice = await run_in_threadpool(
        server.voices.clone, file_id, voice_id, body.get("transcript"), body.get("description") or "",
        server.voice_files,
    )  # fmt: skip
    demo_url = ""
    if demo is not None:
        demo.reference, demo.prompt_text = str(voice.reference), voice.transcript
        _, data = await synthesize(server, model, demo, http=http)
        name = await run_in_threadpool(server.files.put, data, "mp3")
        demo_url = f"{str(http.base_url).rstrip('/')}/v1/audio/files/{name}"
    return {"input_sensitive": False, "input_sensitive_type": 0, "demo_audio": demo_url}


async def _list_voices(server: Server, body):
    kind = _dict(body).get("voice_type")
    if kind not in VOICE_TYPES:
        raise ApiError.invalid("voice_type", f"must be one of {list(VOICE_TYPES)}, got {kind!r}")
    reply = {}
    if kind in ("system", "all"):
        reply["system_voice"] = [
            {"voice_id": v.voice_id, "voice_name": v.name, "description": _described(v)}
            for v in server.voices.system.values()
        ]
    if kind in ("voice_cloning", "all"):
        cloned = await run_in_threadpool(server.voices.cloned)
        reply["voice_cloning"] = [
            {"voice_id": v.voice_id, "description": _described(v), "created_time": v.created_time}
            for v in cloned
        ]
    return reply


def _described(voice) -> list[str]:
    """MiniMax lists a voice's description as a list of strings."""
    return [voice.description] if voice.description else []
