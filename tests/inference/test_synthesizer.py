"""The pipeline built from tiny random checkpoints: lengths, batching, one-shot, pauses, voices, output."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from speech.inference import (
    AudioSetting,
    RequestError,
    SamplingSetting,
    SynthesisRequest,
    Synthesizer,
    TimbreWeight,
    VoiceSetting,
)
from speech.inference.voice import load_reference
from speech.models.ar_transformer import MAX_TOKENS_PER_TEXT, MIN_TOKENS_PER_TEXT

pytestmark = pytest.mark.usefixtures("one_thread")

HOP, FRAMES_PER_TOKEN = 320, 2
SAMPLES_PER_TOKEN = HOP * FRAMES_PER_TOKEN
GREEDY = SamplingSetting(temperature=0, noise_scale=0, seed=0)


@pytest.fixture(scope="module")
def synth(checkpoints):
    return Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"])


def req(text, ref, **kwargs):
    return SynthesisRequest(text, reference=ref, sampling=kwargs.pop("sampling", GREEDY), **kwargs)


def test_waveform_length_follows_token_count(synth, references):
    texts = ["alpha beta", "gamma delta epsilon zeta eta"]
    results = synth.synthesize_batch([req(texts[0], references[0]), req(texts[1], references[1])])
    for text, result in zip(texts, results, strict=True):
        (n,) = result.token_counts
        n_text = len(synth.text_tokenizer.encode(text))
        # Within the AR model's length limits, which scale with the text.
        assert MIN_TOKENS_PER_TEXT * n_text <= n <= MAX_TOKENS_PER_TEXT * n_text
        assert result.audio.shape == (n * SAMPLES_PER_TOKEN,) == (result.model_samples,)
        assert (
            result.sample_rate == 16000 and np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0
        )


def test_batch_equals_one_at_a_time(synth, references):
    requests = [
        req("alpha beta gamma", references[0]),
        req("delta<#0.3#>epsilon zeta eta theta", references[2]),
        req("iota kappa", references[1], prompt_text="alpha beta"),
        req("lambda mu alpha", references[2], prompt_text="gamma delta epsilon"),
        req("beta", references[1]),
    ]
    batched = synth.synthesize_batch(requests, batch_size=3)
    for request, together in zip(requests, batched, strict=True):
        alone = synth.synthesize(request)
        assert together.token_counts == alone.token_counts
        np.testing.assert_allclose(together.audio, alone.audio, atol=1e-4)
    assert len({r.audio.shape for r in batched}) > 1  # rows really had different lengths


def test_one_shot_output_excludes_the_prompt(synth, references):
    (prompt,) = synth.voice.prompts([load_reference(references[2], 16000)])
    assert prompt.tokens.shape == (40,) and prompt.latents.shape == (80, 4)
    one_shot = synth.synthesize(req("alpha beta", references[2], prompt_text="gamma delta"))
    zero_shot = synth.synthesize(req("alpha beta", references[2]))
    (n,) = one_shot.token_counts
    assert one_shot.audio.shape == (n * SAMPLES_PER_TOKEN,)
    # The prompt changes the generation: not the zero-shot result.
    assert one_shot.token_counts != zero_shot.token_counts or not np.allclose(one_shot.audio, zero_shot.audio)


def test_pauses_insert_exact_silence(synth, references):
    result = synth.synthesize(req("alpha beta<#0.5#>gamma<#0.01#>delta", references[0]))
    n1, n2, n3 = result.token_counts
    assert result.audio.shape == ((n1 + n2 + n3) * SAMPLES_PER_TOKEN + 8000 + 160,)
    start = n1 * SAMPLES_PER_TOKEN
    assert not result.audio[start : start + 8000].any() and result.audio[start - 200 : start].any()
    parts = synth.synthesize_batch([req(text, references[0]) for text in ("alpha beta", "gamma", "delta")])
    np.testing.assert_allclose(result.audio[:start], parts[0].audio, atol=1e-4)


def test_volume_sample_rate_format_and_channels(synth, references):
    base = synth.synthesize(req("alpha beta", references[0]))
    quiet = synth.synthesize(req("alpha beta", references[0], voice=VoiceSetting(volume=0.5)))
    np.testing.assert_allclose(quiet.audio, 0.5 * base.audio, atol=1e-5)
    audio = AudioSetting(sample_rate=8000, format="flac", channel=2)
    low = synth.synthesize(req("alpha beta", references[0], audio=audio))
    assert low.sample_rate == 8000 and low.audio.shape == (base.audio.shape[0] // 2, 2)
    decoded, rate = sf.read(io.BytesIO(low.to_bytes()), dtype="float32")
    assert rate == 8000 and decoded.shape == low.audio.shape
    pcm = synth.synthesize(req("alpha beta", references[0], audio=AudioSetting(format="pcm"))).to_bytes()
    assert len(pcm) == 2 * base.audio.shape[0]


def test_timbre_weights_mix_speaker_vectors(synth, references):
    wavs = [load_reference(r, 16000) for r in references[:2]]
    (ar0, ar1), (fm0, fm1) = synth.voice.speakers([[(wavs[0], 1.0)], [(wavs[1], 1.0)]])
    ar_mix, fm_mix = synth.voice.speakers([[(wavs[0], 1.0), (wavs[1], 3.0)]])
    torch.testing.assert_close(ar_mix[0], (ar0 + 3 * ar1) / 4)
    torch.testing.assert_close(fm_mix[0], (fm0 + 3 * fm1) / 4)
    assert not torch.allclose(ar0, ar1)
    alone = synth.synthesize(req("alpha beta", references[0]))
    same = synth.synthesize(
        SynthesisRequest("alpha beta", timbre_weights=[TimbreWeight(references[0], 40)], sampling=GREEDY)
    )
    np.testing.assert_allclose(same.audio, alone.audio, atol=1e-5)


def test_each_speaker_encoder_reads_its_training_crop(synth, references):
    wav = load_reference(references[2], 16000)
    full = synth.voice.speakers([[(wav, 1.0)]])
    synth.voice.max_reference_seconds = (1.0, None)
    try:
        cropped = synth.voice.speakers([[(wav, 1.0)]])
    finally:
        synth.voice.max_reference_seconds = (6.0, 3.0)
    first_second = synth.voice.speakers([[(wav[:16000], 1.0)]])
    torch.testing.assert_close(cropped[0], first_second[0])
    torch.testing.assert_close(cropped[1], full[1])
    assert not torch.allclose(cropped[0], full[0])


def test_array_reference_and_pronunciation_dict(synth, references):
    by_path = synth.synthesize(req("alpha beta", references[1]))
    wav, sr = sf.read(references[1], dtype="float32")
    by_array = synth.synthesize(req("omega beta", wav, pronunciation_dict=["omega/alpha"]))
    np.testing.assert_allclose(by_array.audio, by_path.audio, atol=1e-5)
    resampled = synth.synthesize(req("alpha beta", wav[::2].copy(), reference_sample_rate=8000))
    assert resampled.token_counts and np.isfinite(resampled.audio).all()


def test_seed_reproduces_sampling(synth, references):
    def run(seed):
        sampling = SamplingSetting(temperature=1.0, top_k=10, seed=seed)
        return synth.synthesize(req("alpha beta gamma", references[0], sampling=sampling))

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.token_counts != c.token_counts or not np.allclose(a.audio, c.audio)


def test_errors_name_the_request(synth, references):
    requests = [req("alpha", references[0]), req("beta", references[0], voice=VoiceSetting(volume=20))]
    with pytest.raises(RequestError, match=r"^requests\[1\]\.voice\.volume: must be a number in \(0, 10\]"):
        synth.synthesize_batch(requests)
    with pytest.raises(NotImplementedError, match=r"^requests\[0\]: voice.speed is not implemented yet"):
        synth.synthesize(req("alpha", references[0], voice=VoiceSetting(speed=0.8)))
    with pytest.raises(RequestError, match=r"^requests\[0\]\.text: .*nothing to speak"):
        synth.synthesize(req("alpha<#1#>...", references[0]))
    with pytest.raises(
        RequestError, match=r"^requests\[0\]\.prompt_text: text '\\u200b' normalizes to nothing"
    ):
        synth.synthesize(req("alpha", references[0], prompt_text="\u200b"))  # zero-width space
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        synth.synthesize_batch(requests, batch_size=0)
