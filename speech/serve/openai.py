"""OpenAI's ``POST /v1/audio/speech``: ``{model, input, voice, response_format, speed, stream_format}`` -> the
audio file, errors as OpenAI answers them (HTTP 400/401/429, ``{"error": {"message", "type", "param",
"code"}}``). ``voice`` is any voice of this server (system or cloned); the audio is at OpenAI's 24 kHz."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from speech.inference import AudioSetting, RequestError, SynthesisRequest, VoiceSetting
from speech.serve.common import Chunks, ClientGone, as_api_error, json_body, synthesize
from speech.serve.errors import UNKNOWN, ApiError
from speech.serve.outputs import MEDIA_TYPES
from speech.serve.server import Server

log = logging.getLogger(__name__)
FORMATS = ("mp3", "wav", "flac", "pcm")  # of OpenAI's, those this server writes (not opus, aac)
SAMPLE_RATE = 24000  # OpenAI's output rate
STREAM_FORMATS = ("audio", "sse")
SSE_FORMATS = ("pcm", "mp3")  # chunks that play alone and join (as on the MiniMax route)
FIELDS = {"text": "input", "reference": "voice", "voice.speed": "speed", "audio.format": "response_format"}


async def speech(server: Server, http: Request) -> Response:
    """The route: the audio file, or an OpenAI error."""
    try:
        server.check_auth(http.headers.get("authorization"))
        body = await json_body(http)
        model, request, sse = parse(server, body)
        if sse:
            return await _sse(server, model, request, body["input"])
        _, data = await synthesize(server, model, request, FIELDS, http)
    except ApiError as err:
        status, error = err.openai()
        return JSONResponse(error, status_code=status)
    except ClientGone:
        return Response(status_code=499)  # never received: the client left
    except Exception:
        log.exception("internal error on /v1/audio/speech")
        status, error = ApiError(UNKNOWN, "internal error (logged on the server)").openai()
        return JSONResponse(error, status_code=status)
    return Response(data, media_type=MEDIA_TYPES[request.audio.format])


def parse(server: Server, body) -> tuple[str, SynthesisRequest, bool]:
    """The model name, the request of an OpenAI speech body, and whether it streams SSE."""
    if not isinstance(body, dict):
        raise ApiError.invalid("body", f"must be a JSON object, got {type(body).__name__}")
    model = server.check_model(body.get("model"))
    fmt = body.get("response_format", "mp3")
    if fmt not in FORMATS:
        raise ApiError.invalid("response_format", f"must be one of {list(FORMATS)}, got {fmt!r}")
    sse = body.get("stream_format", "audio")
    if sse not in STREAM_FORMATS:
        raise ApiError.invalid("stream_format", f"must be one of {list(STREAM_FORMATS)}, got {sse!r}")
    if sse == "sse" and fmt not in SSE_FORMATS:
        raise ApiError.invalid("response_format", f"must be one of {list(SSE_FORMATS)} with sse, got {fmt!r}")
    if not isinstance(body.get("voice"), str):
        raise ApiError.invalid("voice", f"is required: a voice_id of this server, got {body.get('voice')!r}")
    voice = server.voices.voice(body["voice"], "voice")
    request = SynthesisRequest(
        text=body.get("input"),
        reference=str(voice.reference),
        prompt_text=voice.transcript,
        language=server.language,
        voice=VoiceSetting(speed=body.get("speed", 1.0)),
        audio=AudioSetting(sample_rate=SAMPLE_RATE, format=fmt),
        sampling=server.sampling,
        stream=sse == "sse",
    )
    try:
        request.validate()
    except RequestError as err:
        raise ApiError.from_request_error(err, FIELDS) from err
    return model, request, sse == "sse"


async def _sse(server: Server, model: str, request: SynthesisRequest, text: str) -> Response:
    """OpenAI's server-sent events: ``speech.audio.delta`` chunks (base64), then ``speech.audio.done``."""
    chunks = Chunks(server, model, request)
    first = await chunks.next()
    if isinstance(first, Exception):
        raise as_api_error(first, FIELDS)

    async def events() -> AsyncIterator[bytes]:
        item = first
        try:
            while isinstance(item, tuple):
                delta = {"type": "speech.audio.delta", "audio": base64.b64encode(item[0]).decode()}
                yield f"data: {json.dumps(delta)}\n\n".encode()
                item = await chunks.next()
            if isinstance(item, Exception):
                _, error = as_api_error(item, FIELDS).openai()
                yield f"data: {json.dumps({'type': 'error', **error})}\n\n".encode()
                return
            usage = {"input_tokens": len(text.split()), "output_tokens": 0, "total_tokens": len(text.split())}
            yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n".encode()
        finally:
            chunks.stop.set()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
