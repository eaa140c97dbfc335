"""Inference: Speech-02-style requests -> speech with the trained models (docs/inference.md)."""

from speech.inference.request import (
    AudioSetting,
    RequestError,
    SamplingSetting,
    SynthesisRequest,
    TimbreWeight,
    VoiceSetting,
)
from speech.inference.synthesizer import SynthesisResult, Synthesizer

__all__ = [
    "AudioSetting",
    "RequestError",
    "SamplingSetting",
    "SynthesisRequest",
    "SynthesisResult",
    "Synthesizer",
    "TimbreWeight",
    "VoiceSetting",
]
