"""Request validation: every bad field is named with its allowed range; unimplemented options say so."""

import dataclasses
import inspect
import re

import numpy as np
import pytest

from speech.inference import (
    AudioSetting,
    RequestError,
    SamplingSetting,
    SynthesisRequest,
    TimbreWeight,
    VoiceSetting,
)
from speech.inference.request import AR_OPTIONS, FM_OPTIONS
from speech.inference.text_frontend import apply_pronunciations
from speech.models.ar_transformer import MIN_TOKENS_PER_TEXT, ARTransformer
from speech.models.flow_matching import FlowMatching


@pytest.fixture
def ref(tmp_path):
    path = tmp_path / "ref.wav"
    path.write_bytes(b"")  # validation only checks that the file exists
    return path


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"text": "  "}, "text", "nothing to speak"),
        ({"text": "x" * 10_001}, "text", "at most 10000 characters"),
        ({"text": "hello<#0.5#>"}, "text", "ends the text"),
        ({"text": "hi<#100#>there"}, "text", "out of range"),
        ({"prompt_text": " "}, "prompt_text", "nothing to speak"),
        ({"language": ""}, "language", "language code"),
        ({"reference": None}, "reference", "is required"),
        ({"reference": "/no/such.wav"}, "reference", "not found"),
        ({"reference": np.zeros((2, 10))}, "reference", "mono audio of shape (t,)"),
        ({"reference_sample_rate": 0}, "reference_sample_rate", "[4000, 384000] Hz"),
        ({"voice": VoiceSetting(speed=3.0)}, "voice.speed", "[0.5, 2.0]"),
        ({"voice": VoiceSetting(volume=0)}, "voice.volume", "(0, 10]"),
        ({"voice": VoiceSetting(volume=11)}, "voice.volume", "(0, 10]"),
        ({"voice": VoiceSetting(pitch=1.5)}, "voice.pitch", "integer in [-12, 12]"),
        ({"voice": VoiceSetting(pitch=13)}, "voice.pitch", "integer in [-12, 12]"),
        ({"voice": VoiceSetting(emotion="  ")}, "voice.emotion", "name of a loaded emotion adapter"),
        ({"voice": VoiceSetting(emotion=3)}, "voice.emotion", "name of a loaded emotion adapter"),
        ({"audio": AudioSetting(sample_rate=12345)}, "audio.sample_rate", "22050"),
        ({"audio": AudioSetting(format="ogg")}, "audio.format", "'mp3'"),
        ({"audio": AudioSetting(format="wav", bitrate=128000)}, "audio.bitrate", "mp3 only"),
        ({"audio": AudioSetting(format="mp3", bitrate=1000)}, "audio.bitrate", "128000"),
        ({"audio": AudioSetting(16000, "mp3", bitrate=256000)}, "audio.bitrate", "rate in [32000, 44100]"),
        ({"audio": AudioSetting(channel=3)}, "audio.channel", "[1, 2]"),
        ({"sampling": SamplingSetting(temperature=-1)}, "sampling.temperature", ">= 0"),
        ({"sampling": SamplingSetting(top_p=0)}, "sampling.top_p", "(0, 1]"),
        ({"sampling": SamplingSetting(eos_threshold=0)}, "sampling.eos_threshold", "None or a number"),
        ({"sampling": SamplingSetting(eos_threshold=1.2)}, "sampling.eos_threshold", "(0, 1]"),
        ({"sampling": SamplingSetting(min_tokens_per_text=-1)}, "sampling.min_tokens_per_text", ">= 0"),
        ({"sampling": SamplingSetting(min_tokens_per_text="2")}, "sampling.min_tokens_per_text", "a number"),
        ({"sampling": SamplingSetting(steps=0)}, "sampling.steps", ">= 1"),
        ({"sampling": SamplingSetting(solver="rk4")}, "sampling.solver", "'euler'"),
        ({"pronunciation_dict": ["nope"]}, "pronunciation_dict[0]", "'written/spoken'"),
        ({"pronunciation_dict": {"": "x"}}, "pronunciation_dict", "non-empty string"),
        ({"pronunciation_dict": "a/b"}, "pronunciation_dict", "a dict"),
    ],
)
def test_invalid_fields_are_named_with_their_range(ref, changes, field, message):
    request = SynthesisRequest(**{"text": "hello there", "reference": ref, **changes})
    with pytest.raises(RequestError) as err:
        request.validate()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and message in str(err.value)


def test_timbre_weights_validation(ref):
    voices = [TimbreWeight(ref, 10)] * 5
    with pytest.raises(RequestError, match="timbre_weights: must be a list of 1 to 4 voices"):
        SynthesisRequest("hi", timbre_weights=voices).validate()
    with pytest.raises(RequestError, match=r"timbre_weights\[1\].weight: must be in \[1, 100\], got 0"):
        SynthesisRequest("hi", timbre_weights=[TimbreWeight(ref, 5), TimbreWeight(ref, 0)]).validate()
    with pytest.raises(RequestError, match="replaces reference"):
        SynthesisRequest("hi", reference=ref, timbre_weights=[TimbreWeight(ref, 5)]).validate()
    with pytest.raises(RequestError, match="one-shot"):
        SynthesisRequest("hi", prompt_text="yo", timbre_weights=[TimbreWeight(ref, 5)]).validate()
    ok = SynthesisRequest("hi", timbre_weights=[TimbreWeight(ref, 1), TimbreWeight(np.ones(5), 99)])
    ok.validate()
    assert [(name, w) for name, _, w in ok.voices()] == [
        ("timbre_weights[0].reference", 1.0),
        ("timbre_weights[1].reference", 99.0),
    ]


def test_valid_request_passes(ref):
    request = SynthesisRequest(
        "Hi<#0.25#>there", reference=ref, prompt_text="a transcript", voice=VoiceSetting(volume=10),
        audio=AudioSetting(sample_rate=44100, format="mp3", channel=2), pronunciation_dict=["a/b", "long/x"],
    )  # fmt: skip
    request.validate()
    assert request.one_shot
    assert request.pronunciations() == [("long", "x"), ("a", "b")]


@pytest.mark.parametrize("sample_rate", [None, 8000, 44100])
def test_mp3_bitrate_is_implemented(ref, sample_rate):
    audio = AudioSetting(sample_rate=sample_rate, format="mp3", bitrate=64000)
    SynthesisRequest("hello", reference=ref, audio=audio).validate()


def test_pronunciations_substitute_once_longest_first():
    pairs = SynthesisRequest(
        "x", pronunciation_dict={"Dr": "Drive", "Dr.": "Doctor", "o": "0"}
    ).pronunciations()
    # "Dr." wins over its prefix "Dr", and the "o" inside "Doctor" is not rewritten again.
    assert apply_pronunciations("Dr. Who, Dr Oak", pairs) == "Doctor Wh0, Drive Oak"


def test_sampling_options_cover_every_knob_and_match_the_model_signatures():
    fields = {f.name for f in dataclasses.fields(SamplingSetting)}
    assert set(AR_OPTIONS) | set(FM_OPTIONS) | {"seed"} == fields  # a new knob must be routed somewhere
    assert set(AR_OPTIONS) <= set(inspect.signature(ARTransformer.generate_stream).parameters)
    assert set(FM_OPTIONS) <= set(inspect.signature(FlowMatching.sample).parameters)
    setting = SamplingSetting(temperature=0.5, steps=3)
    assert setting.ar_options()["temperature"] == 0.5 and setting.fm_options()["steps"] == 3
    # the request layer stays torch-free, so it repeats the model's default length floor: keep them equal
    assert SamplingSetting().min_tokens_per_text == MIN_TOKENS_PER_TEXT


# Issue 17: text with nothing to speak passed validation and was synthesized as babble; the rule
# (a letter, digit or CJK character after normalization) now has one owner, text_frontend.check_speakable.
@pytest.mark.parametrize(
    ("changes", "field", "quoted"),
    [
        ({"text": "..."}, "text", "'...'"),
        ({"text": "\U0001f600\U0001f600"}, "text", "'\U0001f600\U0001f600'"),
        ({"text": "alpha<#0.5#>beta", "pronunciation_dict": {"beta": "!!"}}, "text", "'!!'"),
        ({"prompt_text": "?!"}, "prompt_text", "'?!'"),
        ({"prompt_text": "\u200b"}, "prompt_text", "normalizes to ''"),
    ],
)
def test_text_with_nothing_to_speak_is_refused(ref, changes, field, quoted):
    request = SynthesisRequest(**{"text": "hello there", "reference": ref, **changes})
    with pytest.raises(RequestError, match=rf"^{field}: .*has nothing to speak") as err:
        request.validate()
    assert quoted in str(err.value)
    # Normalization can make a symbol speakable: "&" is "and".
    SynthesisRequest("&", reference=ref).validate()


# Issue 17: a field of the wrong type raised TypeError (or passed: True for 1) instead of naming it.
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"text": b"hello"}, "text"),
        ({"prompt_text": 5}, "prompt_text"),
        ({"reference_sample_rate": "16000"}, "reference_sample_rate"),
        ({"reference_sample_rate": 22050.5}, "reference_sample_rate"),
        ({"reference_sample_rate": 1}, "reference_sample_rate"),
        ({"reference": np.zeros(16000, dtype=np.int16)}, "reference"),
        ({"voice": VoiceSetting(speed=True)}, "voice.speed"),
        ({"voice": VoiceSetting(speed="1")}, "voice.speed"),
        ({"voice": VoiceSetting(volume=float("nan"))}, "voice.volume"),
        ({"audio": AudioSetting(channel=True)}, "audio.channel"),
        ({"audio": AudioSetting(format=["wav"])}, "audio.format"),
        ({"sampling": SamplingSetting(temperature="hot")}, "sampling.temperature"),
        ({"sampling": SamplingSetting(temperature=None)}, "sampling.temperature"),
        ({"sampling": SamplingSetting(top_p=float("nan"))}, "sampling.top_p"),
        ({"sampling": SamplingSetting(cfg_scale=float("inf"))}, "sampling.cfg_scale"),
        ({"sampling": SamplingSetting(noise_scale="1")}, "sampling.noise_scale"),
        ({"sampling": SamplingSetting(max_tokens=1.5)}, "sampling.max_tokens"),
        ({"sampling": SamplingSetting(steps=2.0)}, "sampling.steps"),
        ({"sampling": SamplingSetting(seed=True)}, "sampling.seed"),
        ({"sampling": SamplingSetting(seed=2**70)}, "sampling.seed"),
        ({"sampling": SamplingSetting(solver=None)}, "sampling.solver"),
        ({"pronunciation_dict": {"hello": 5}}, "pronunciation_dict"),
    ],
)
def test_wrong_types_are_named_not_type_errors(ref, changes, field):
    request = SynthesisRequest(**{"text": "hello there", "reference": ref, **changes})
    with pytest.raises(RequestError, match=rf"^{re.escape(field)}: ") as err:
        request.validate()
    assert err.value.field == field and err.value.index is None


def test_request_error_names_the_request_of_a_batch_only():
    err = RequestError("voice.volume", "must be a number in (0, 10], got 20")
    assert str(err) == "voice.volume: must be a number in (0, 10], got 20"
    indexed = err.for_request(3)
    assert (indexed.field, indexed.index) == ("voice.volume", 3)
    assert str(indexed) == "requests[3].voice.volume: must be a number in (0, 10], got 20"
    assert str(indexed.for_request(None)) == str(err)


# Issue 17, defect 6: a NUL byte was dropped by normalization and joined the words around it
# ("hello\0world" -> "helloworld"); control characters other than whitespace are refused, naming them.
@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"text": "hello\0world"}, "text", r"holds the control character U\+0000 at character 5 "
         r"\('hello\\x00world'\); control characters are not text"),
        ({"prompt_text": "a\x1b[0mb"}, "prompt_text", r"holds the control character U\+001B at character 1"),
        ({"text": "hi\x7f"}, "text", r"holds the control character U\+007F at character 2"),
        ({"pronunciation_dict": {"hi": "h\0i"}}, "pronunciation_dict",
         r"entry 'hi' -> 'h\\x00i': the spoken form holds the control character U\+0000 at character 1"),
    ],
)  # fmt: skip
def test_control_characters_are_refused(ref, changes, field, message):
    request = SynthesisRequest(**{"text": "hello there", "reference": ref, **changes})
    with pytest.raises(RequestError, match=rf"^{field}: {message}"):
        request.validate()
    # Tabs, line breaks and other whitespace are spaces.
    SynthesisRequest("hello\tthere\r\nyou\x85all", reference=ref, prompt_text="a\nb").validate()
