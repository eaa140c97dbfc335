"""Emotion adapters in the synthesizer: a request's ``voice.emotion`` runs the AR model with that LoRA
adapter and nothing else changes; emotions mix in one call; wrong names and wrong adapters are refused."""

import numpy as np
import pytest
import torch
from tiny_pipeline import save_adapter

from speech.checkpoints import load_adapter
from speech.inference import RequestError, SamplingSetting, SynthesisRequest, Synthesizer, VoiceSetting
from speech.inference.loading import load_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = SamplingSetting(temperature=0, noise_scale=0, seed=0)


@pytest.fixture(scope="module")
def adapters(checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {name: save_adapter(root / f"{name}.ckpt", checkpoints["ar"], name, seed=i)
            for i, name in enumerate(("happy", "sad"))}  # fmt: skip


@pytest.fixture(scope="module")
def synth(checkpoints, adapters):
    return Synthesizer.from_checkpoints(
        checkpoints["ar"], checkpoints["fm"], emotion_adapters=list(adapters.values())
    )


def req(text, ref, emotion=None, sampling=GREEDY, **kwargs):
    return SynthesisRequest(
        text, reference=ref, voice=VoiceSetting(emotion=emotion), sampling=sampling, **kwargs
    )


def merged_synthesizer(checkpoints, adapter_path) -> Synthesizer:
    """A synthesizer whose AR weights carry the adapter for good (no adapters loaded)."""
    models = load_pipeline(checkpoints["ar"], checkpoints["fm"])
    adapter = load_adapter(adapter_path)
    with torch.no_grad():
        for linear, delta in adapter.deltas(models["ar"]):
            linear.weight.add_(delta)
    return Synthesizer(**models)


@pytest.mark.parametrize("prompt_text", [None, "gamma delta"])
def test_emotion_is_the_adapter_on_the_ar_model(synth, checkpoints, adapters, references, prompt_text):
    text = "alpha beta gamma delta epsilon"
    base = synth.synthesize(req(text, references[0], prompt_text=prompt_text))
    happy = synth.synthesize(req(text, references[0], "happy", prompt_text=prompt_text))
    expected = merged_synthesizer(checkpoints, adapters["happy"]).synthesize(
        req(text, references[0], prompt_text=prompt_text)
    )
    assert happy.token_counts == expected.token_counts
    np.testing.assert_allclose(happy.audio, expected.audio, atol=1e-5)
    assert happy.token_counts != base.token_counts or not np.allclose(happy.audio, base.audio, atol=1e-3)
    again = synth.synthesize(req(text, references[0], prompt_text=prompt_text))  # the base is back
    np.testing.assert_array_equal(again.audio, base.audio)


def test_mixed_emotions_in_one_call_equal_one_at_a_time(synth, references):
    requests = [
        req("alpha beta gamma", references[0], "sad"),
        req("delta epsilon<#0.2#>zeta", references[1], None),
        req("eta theta iota", references[2], "happy"),
        req("kappa lambda", references[1], "sad", prompt_text="alpha beta"),
        req("mu alpha beta", references[0], "happy"),
    ]
    ar_before = {k: v.clone() for k, v in synth.ar.state_dict().items()}
    together = synth.synthesize_batch(requests, batch_size=4)
    for request, result in zip(requests, together, strict=True):
        alone = synth.synthesize(request)
        assert alone.token_counts == result.token_counts
        np.testing.assert_allclose(alone.audio, result.audio, atol=1e-4)
    for key, value in synth.ar.state_dict().items():
        assert torch.equal(value, ar_before[key]), key


def test_stream_carries_the_emotion(synth, references):
    request = req("alpha beta gamma delta", references[1], "happy")
    whole = synth.synthesize(request)
    ar_before = {k: v.clone() for k, v in synth.ar.state_dict().items()}
    streamed = np.concatenate(list(synth.stream(request, chunk_tokens=10_000)))
    np.testing.assert_allclose(streamed, whole.audio, atol=1e-5)
    for key, value in synth.ar.state_dict().items():
        assert torch.equal(value, ar_before[key]), key


def test_unknown_emotion_lists_the_loaded_adapters(synth, references):
    assert synth.emotions == ["happy", "sad"]
    with pytest.raises(
        RequestError,
        match=r"^requests\[1\]\.voice\.emotion: no adapter for 'angry': "
        r"the loaded ones are \['happy', 'sad'\]",
    ):
        synth.synthesize_batch([req("alpha", references[0], "happy"), req("beta", references[0], "angry")])


def test_adapters_must_fit_the_ar_checkpoint(checkpoints, adapters, tmp_path):
    from tiny_pipeline import make_bpe, save_checkpoint

    other_ar = save_checkpoint(tmp_path / "other_ar.ckpt", "ar", seed=9, bpe=make_bpe().to_str())
    with pytest.raises(ValueError, match=r"happy.ckpt \('happy'\) was trained on another AR checkpoint"):
        Synthesizer.from_checkpoints(other_ar, checkpoints["fm"], emotion_adapters=[adapters["happy"]])
    with pytest.raises(ValueError, match="holds no LoRA adapter; train one with `python train.py"):
        Synthesizer.from_checkpoints(
            checkpoints["ar"], checkpoints["fm"], emotion_adapters=[checkpoints["fm"]]
        )
    twice = [adapters["happy"], save_adapter(tmp_path / "happy2.ckpt", checkpoints["ar"], "happy", seed=5)]
    with pytest.raises(ValueError, match="two emotion adapters are named 'happy'"):
        Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"], emotion_adapters=twice)
