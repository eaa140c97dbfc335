"""Errors a route answers, in MiniMax's codes (``base_resp.status_code``) and OpenAI's HTTP shape.

MiniMax clients read the body, so MiniMax routes answer HTTP 200 with the code in ``base_resp``; the OpenAI
route answers with an HTTP status and ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

from speech.inference import RequestError

SUCCESS = 0
UNKNOWN = 1000  # an internal error: logged with its traceback, never sent
OVERLOADED = 1002  # MiniMax: rate limit triggered
AUTH_FAILED = 1004
INVALID_PARAMS = 2013
VOICE_EXISTS = 2039  # MiniMax: voice_id duplicate
NOT_AVAILABLE = 2061  # a route this server does not offer yet

# MiniMax code -> (HTTP status, OpenAI type, OpenAI code) for the OpenAI route.
OPENAI = {
    AUTH_FAILED: (401, "invalid_request_error", "invalid_api_key"),
    INVALID_PARAMS: (400, "invalid_request_error", "invalid_value"),
    VOICE_EXISTS: (400, "invalid_request_error", "invalid_value"),
    NOT_AVAILABLE: (404, "invalid_request_error", "not_found"),
    OVERLOADED: (429, "rate_limit_exceeded", "rate_limit_exceeded"),
    UNKNOWN: (500, "server_error", "internal_error"),
}

# The synthesizer's request fields -> the MiniMax body's names, so a message names what the client sent.
MINIMAX_FIELDS = {
    "voice.speed": "voice_setting.speed",
    "voice.volume": "voice_setting.vol",
    "voice.pitch": "voice_setting.pitch",
    "voice.emotion": "voice_setting.emotion",
    "audio.": "audio_setting.",
    "reference": "voice_setting.voice_id",
    "timbre_weights": "timbre_weights",
    "pronunciation_dict": "pronunciation_dict.tone",
    "language": "language_boost",
}


class ApiError(Exception):
    """A request the server refuses: a MiniMax status code and a message naming the field.

    Attributes:
        code: ``base_resp.status_code``.
        message: ``base_resp.status_msg``, e.g. ``invalid params, voice_setting.speed: must be ...``.
        param: The field at fault (the OpenAI ``param``), or ``None``.
    """

    def __init__(self, code: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    @classmethod
    def invalid(cls, field: str, problem: str) -> ApiError:
        """2013: ``invalid params, <field>: <problem>``."""
        return cls(INVALID_PARAMS, f"invalid params, {field}: {problem}", field)

    @classmethod
    def from_request_error(cls, err: RequestError, names: dict[str, str] | None = None) -> ApiError:
        """A ``RequestError`` of the shared request layer, its field renamed as the body spells it."""
        field = err.field
        for ours, theirs in (names if names is not None else MINIMAX_FIELDS).items():
            if field.startswith(ours):
                field = theirs + field[len(ours) :]
                break
        return cls.invalid(field, err.problem)

    def base_resp(self) -> dict:
        return {"status_code": self.code, "status_msg": self.message}

    def openai(self) -> tuple[int, dict]:
        """``(HTTP status, body)`` as OpenAI answers."""
        status, kind, code = OPENAI.get(self.code, OPENAI[UNKNOWN])
        return status, {"error": {"message": self.message, "type": kind, "param": self.param, "code": code}}


def success() -> dict:
    return {"status_code": SUCCESS, "status_msg": "success"}
