"""MiniMax T2A v2 bodies -> ``SynthesisRequest``, and the reply's ``extra_info``.

Only the body's shape is checked here (objects where objects go, known values of the server's own options);
every synthesis field is checked by the shared request layer (``SynthesisRequest.validate``), whose
``RequestError`` is answered with the field as the body names it (``errors.MINIMAX_FIELDS``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from speech.inference import AudioSetting, SamplingSetting, SynthesisRequest, TimbreWeight, VoiceSetting
from speech.inference.request import RequestError
from speech.serve.errors import ApiError
from speech.serve.voices import VoiceStore

# MiniMax's defaults for audio_setting.
DEFAULT_AUDIO = {"sample_rate": 32000, "bitrate": 128000, "format": "mp3", "channel": 1}
STREAM_FORMATS = ("mp3", "pcm")  # chunks that are playable alone and join into the whole file
OUTPUT_FORMATS = ("hex", "url")
# language_boost -> the text normalizer's language code ("auto" and null: the server's default language).
LANGUAGES = {
    "Chinese": "zh", "Chinese,Yue": "yue", "English": "en", "Arabic": "ar", "Russian": "ru", "Spanish": "es",
    "French": "fr", "Portuguese": "pt", "German": "de", "Turkish": "tr", "Dutch": "nl", "Ukrainian": "uk",
    "Vietnamese": "vi", "Indonesian": "id", "Japanese": "ja", "Italian": "it", "Korean": "ko", "Thai": "th",
    "Polish": "pl", "Romanian": "ro", "Greek": "el", "Czech": "cs", "Finnish": "fi", "Hindi": "hi",
}  # fmt: skip


@dataclass
class T2ARequest:
    """A parsed T2A body: the model name, the synthesis request and how to answer."""

    model: str
    request: SynthesisRequest
    stream: bool = False
    exclude_aggregated_audio: bool = False
    output_format: str = "hex"


def _object(body: dict, name: str) -> dict:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError.invalid(name, f"must be an object, got {type(value).__name__}")
    return value


def _bool(body: dict, name: str, field: str | None = None) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError.invalid(field or name, f"must be true or false, got {value!r}")
    return value


def parse_t2a(
    body, voices: VoiceStore, sampling: SamplingSetting, language: str, model: str | None = None
) -> T2ARequest:
    """Checks and converts a T2A v2 body.

    Args:
        body: The decoded JSON.
        voices: Where ``voice_id`` s are looked up.
        sampling: The server's generation knobs.
        language: The language when ``language_boost`` is unset or ``auto``.
        model: The model the route names (``/v3/minimax-speech-02-*``), else the body's ``model``.

    Raises:
        ApiError: 2013 naming the field and what it allows.
    """
    if not isinstance(body, dict):
        raise ApiError.invalid("body", f"must be a JSON object, got {type(body).__name__}")
    if model is None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError.invalid("model", f"is required: the name of a served model, got {model!r}")
    stream = _bool(body, "stream")
    exclude = _bool(_object(body, "stream_options"), "exclude_aggregated_audio",
                    "stream_options.exclude_aggregated_audio")  # fmt: skip
    output_format = body.get("output_format") or "hex"
    if output_format not in OUTPUT_FORMATS:
        allowed = list(OUTPUT_FORMATS)
        raise ApiError.invalid("output_format", f"must be one of {allowed}, got {output_format!r}")
    voice_setting, audio_setting = _object(body, "voice_setting"), _object(body, "audio_setting")
    audio = AudioSetting(**{
        name: default if audio_setting.get(name) is None else audio_setting[name]
        for name, default in DEFAULT_AUDIO.items()
    })  # fmt: skip
    if audio.format != "mp3" and "bitrate" not in audio_setting:
        audio = replace(audio, bitrate=None)  # the default bitrate is mp3's
    if stream and audio.format not in STREAM_FORMATS:
        raise ApiError.invalid(
            "audio_setting.format",
            f"{audio.format!r} cannot be streamed: streaming sends {list(STREAM_FORMATS)}",
        )
    request = SynthesisRequest(
        text=body.get("text"),
        language=_language(body.get("language_boost"), language),
        voice=VoiceSetting(
            speed=voice_setting.get("speed", 1.0),
            volume=voice_setting.get("vol", 1.0),
            pitch=voice_setting.get("pitch", 0),
            emotion=voice_setting.get("emotion"),
        ),
        audio=audio,
        sampling=sampling,
        pronunciation_dict=_pronunciations(body),
        stream=stream,
    )
    _set_voice(request, body, voice_setting, voices)
    try:
        request.validate()
    except RequestError as err:
        raise ApiError.from_request_error(err) from err
    return T2ARequest(model, request, stream, exclude, output_format)


def _language(boost, default: str) -> str:
    if boost is None or boost == "auto":
        return default
    if boost not in LANGUAGES:
        raise ApiError.invalid("language_boost", f"must be one of {[*LANGUAGES, 'auto']}, got {boost!r}")
    return LANGUAGES[boost]


def _pronunciations(body: dict) -> list[str] | None:
    tone = _object(body, "pronunciation_dict").get("tone")
    if tone is None:
        return None
    if not isinstance(tone, list):
        raise ApiError.invalid("pronunciation_dict.tone", f"must be a list of 'written/spoken', got {tone!r}")
    return tone


def _set_voice(request: SynthesisRequest, body: dict, voice_setting: dict, voices: VoiceStore) -> None:
    """``voice_setting.voice_id`` (one voice, one-shot when it has a transcript) or ``timbre_weights``."""
    key = "timbre_weights" if "timbre_weights" in body else "timber_weights"
    weights, voice_id = body.get(key), voice_setting.get("voice_id")
    if weights is None:
        if voice_id is None:
            raise ApiError.invalid("voice_setting.voice_id", f"is required (or {key})")
        voice = voices.voice(voice_id, "voice_setting.voice_id")
        request.reference, request.prompt_text = str(voice.reference), voice.transcript
        return
    if not isinstance(weights, list) or not weights:
        raise ApiError.invalid(key, f"must be a list of {{voice_id, weight}}, got {weights!r}")
    if len(weights) > 4:
        raise ApiError.invalid(key, f"must hold at most 4 voices, got {len(weights)}")
    mix = []
    for i, entry in enumerate(weights):
        if not isinstance(entry, dict):
            raise ApiError.invalid(f"{key}[{i}]", f"must be an object {{voice_id, weight}}, got {entry!r}")
        voice = voices.voice(entry.get("voice_id"), f"{key}[{i}].voice_id")
        mix.append(TimbreWeight(str(voice.reference), entry.get("weight")))
    request.timbre_weights = mix


def extra_info(t2a: T2ARequest, samples: int, sample_rate: int, size: int, bitrate: int | None) -> dict:
    """MiniMax's ``extra_info`` of a reply."""
    text, audio = t2a.request.text, t2a.request.audio
    return {
        "audio_length": int(round(1000 * samples / sample_rate)),
        "audio_sample_rate": sample_rate,
        "audio_size": size,
        "bitrate": bitrate or 0,
        "audio_format": audio.format,
        "audio_channel": audio.channel,
        "word_count": len(text.split()),
        "usage_characters": len(text),
    }
