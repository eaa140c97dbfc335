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
        n_text = len(synth.bpe.encode(text))
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
    with pytest.raises(RequestError, match=r"^voice\.emotion: no adapter for 'sad': none is loaded"):
        synth.synthesize(req("alpha", references[0], voice=VoiceSetting(emotion="sad")))
    with pytest.raises(RequestError, match=r"^text: .*nothing to speak"):
        synth.synthesize(req("alpha<#1#>...", references[0]))
    with pytest.raises(
        RequestError, match=r"^prompt_text: '\\u200b' has nothing to speak: it normalizes to ''"
    ):
        synth.synthesize(req("alpha", references[0], prompt_text="\u200b"))  # zero-width space
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        synth.synthesize_batch(requests, batch_size=0)


@pytest.mark.parametrize(("speed", "pitch"), [(2.0, 0), (0.5, 0), (1.0, 12), (1.0, -5), (0.8, 3)])
@pytest.mark.parametrize("prompt_text", [None, "gamma delta"])
def test_speed_sets_the_duration_and_pitch_keeps_it(synth, references, speed, pitch, prompt_text):
    plain = synth.synthesize(req("alpha beta gamma", references[2], prompt_text=prompt_text))
    voice = VoiceSetting(speed=speed, pitch=pitch)
    result = synth.synthesize(req("alpha beta gamma", references[2], prompt_text=prompt_text, voice=voice))
    assert (
        result.token_counts == plain.token_counts
    )  # the same tokens: speed and pitch act after the AR model
    frames = round(plain.token_counts[0] * FRAMES_PER_TOKEN * 2 ** (pitch / 12) / speed)
    assert result.model_samples == pytest.approx(frames * HOP / 2 ** (pitch / 12), abs=1)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0


def test_speed_and_pitch_can_differ_within_a_batch(synth, references):
    requests = [
        req("alpha beta", references[0], voice=VoiceSetting(speed=2.0)),
        req("gamma delta", references[1], voice=VoiceSetting(pitch=7)),
        req("epsilon zeta", references[2]),
    ]
    for together, request in zip(synth.synthesize_batch(requests), requests, strict=True):
        np.testing.assert_allclose(together.audio, synth.synthesize(request).audio, atol=1e-4)


def test_mp3_bitrate_reaches_the_bytes(synth, references):
    result = synth.synthesize(req("alpha", references[0], audio=AudioSetting(format="mp3", bitrate=32000)))
    data = result.to_bytes()
    assert data[:2] in (b"\xff\xf3", b"\xff\xe3") or b"\xff\xf3" in data[:4096]  # MPEG-2 frames at 16 kHz
    header = data[data.index(b"\xff\xf3") :][:4]
    assert header[2] >> 4 == 4  # MPEG-2 layer III bitrate index 4 = 32 kbps
    with pytest.raises(RequestError, match=r"^audio\.bitrate: mp3 at 16000 Hz cannot carry"):
        synth.synthesize(req("alpha", references[0], audio=AudioSetting(format="mp3", bitrate=256000)))


def stream_chunks(synth, request, chunk_tokens):
    return list(synth.stream(request, chunk_tokens=chunk_tokens))


@pytest.mark.parametrize("prompt_text", [None, "gamma delta"])
def test_stream_yields_the_utterance_in_chunks(synth, references, prompt_text):
    request = req("alpha beta gamma delta epsilon", references[2], prompt_text=prompt_text)
    (n,) = synth.synthesize(request).token_counts  # greedy: the stream's AR makes the same tokens
    chunks = stream_chunks(synth, request, chunk_tokens=4)
    assert len(chunks) >= n // 4 and all(c.dtype == np.float32 and c.size for c in chunks)
    audio = np.concatenate(chunks)
    assert audio.shape == (n * SAMPLES_PER_TOKEN,) and np.isfinite(audio).all()
    # One chunk of every token: flow matching sees all tokens at once, as synthesize's does.
    (once,) = stream_chunks(synth, request, chunk_tokens=10_000)
    np.testing.assert_allclose(once, synth.synthesize(request).audio, atol=1e-4)


@pytest.mark.parametrize("chunk_tokens", [3, 1000])
def test_a_seed_gives_the_same_tokens_streamed_or_not(synth, references, chunk_tokens):
    sampling = SamplingSetting(temperature=1.0, seed=7)
    request = req("alpha beta gamma delta", references[1], sampling=sampling)
    (n,) = synth.synthesize(request).token_counts
    assert len(np.concatenate(stream_chunks(synth, request, chunk_tokens))) == n * SAMPLES_PER_TOKEN


def test_stream_starts_before_generation_ends(synth, references, monkeypatch):
    steps = []
    original = synth.ar._step
    monkeypatch.setattr(synth.ar, "_step", lambda *a, **k: steps.append(1) or original(*a, **k))
    chunks = synth.stream(req("alpha beta gamma delta epsilon zeta", references[0]), chunk_tokens=3)
    next(chunks)
    at_first_chunk = len(steps)
    rest = list(chunks)
    assert rest and at_first_chunk < len(steps)


def test_stream_renders_pauses_speed_pitch_and_the_output_format(synth, references):
    voice, audio = VoiceSetting(speed=2.0, pitch=12, volume=0.5), AudioSetting(sample_rate=8000, channel=2)
    request = req("alpha beta gamma<#0.5#>delta", references[1], voice=voice, audio=audio)
    whole = synth.synthesize(request)
    streamed = np.concatenate(stream_chunks(synth, request, chunk_tokens=3))
    assert streamed.shape[1] == 2 and streamed.shape[0] == pytest.approx(whole.audio.shape[0], abs=2)
    # The pause is there: half a second of exact silence at 8 kHz somewhere in the middle.
    silent = np.flatnonzero(np.abs(streamed[:, 0]) < 1e-4)
    runs = np.split(silent, np.flatnonzero(np.diff(silent) != 1) + 1)
    assert max(len(r) for r in runs) >= 0.5 * 8000 - 120  # the resampler rings into its edges


def test_stream_errors(synth, references):
    with pytest.raises(RequestError, match=r"^stream: synthesize\(\) returns whole utterances"):
        synth.synthesize(req("alpha", references[0], stream=True))
    assert stream_chunks(synth, req("alpha", references[0], stream=True), chunk_tokens=5)
    with pytest.raises(ValueError, match="chunk_tokens must be an integer >= 1, got 0"):
        next(synth.stream(req("alpha", references[0]), chunk_tokens=0))
    with pytest.raises(RequestError, match=r"^voice\.speed"):
        next(synth.stream(req("alpha", references[0], voice=VoiceSetting(speed=3.0))))


def test_long_text_is_cut_into_segments(checkpoints, references):
    synth = Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"], max_segment_tokens=12)
    text = "alpha beta gamma. delta epsilon zeta eta, theta iota kappa. lambda mu alpha beta gamma delta."
    result = synth.synthesize(req(text, references[0]))
    segments = [s.text for s in synth._encode_texts(req(text, references[0]))[0]]
    assert len(result.token_counts) == len(segments) > 1
    assert all(len(synth.bpe.encode(s)) <= 12 for s in segments)
    assert result.audio.shape == (sum(result.token_counts) * SAMPLES_PER_TOKEN,)  # joined without gaps
    # Each segment is generated as if it had been its own request.
    first = synth.synthesize(req(segments[0], references[0]))
    assert first.token_counts[0] == result.token_counts[0]
    streamed = np.concatenate(stream_chunks(synth, req(text, references[0]), chunk_tokens=1000))
    np.testing.assert_allclose(streamed, result.audio, atol=1e-4)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"max_segment_tokens must be None or an int >= 1, got {bad!r}"):
            Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"], max_segment_tokens=bad)


def test_stream_flow_matching_sees_a_bounded_context(synth, references, monkeypatch):
    widths, original = [], synth.fm.sample
    monkeypatch.setattr(
        synth.fm, "sample", lambda **kw: widths.append(kw["tokens"].shape[1]) or original(**kw)
    )
    request = req("alpha beta gamma delta epsilon zeta", references[0])
    (n,) = synth.synthesize(request).token_counts
    widths.clear()
    audio = np.concatenate(list(synth.stream(request, chunk_tokens=3, context_tokens=4)))
    assert audio.shape == (n * SAMPLES_PER_TOKEN,)
    assert len(widths) == -(-n // 3) and widths[0] == 3 and max(widths) == 4 + 3  # never the whole history
    with pytest.raises(ValueError, match="context_tokens must be an integer >= 0, got -1"):
        next(synth.stream(request, context_tokens=-1))


def streamed_together(synth, requests, **kwargs) -> tuple[dict[int, list], list]:
    chunks, order = {}, []
    for event in synth.stream_batch(requests, **kwargs):
        assert event.index not in order or not chunks[event.index][-1][1], "a chunk after the last one"
        chunks.setdefault(event.index, []).append((event.audio, event.last))
        order.append(event.index)
    return chunks, order


def test_streams_generated_together_equal_each_alone(synth, references):
    requests = [
        req("alpha beta gamma delta epsilon", references[0]),
        req("zeta<#0.2#>eta theta iota kappa lambda", references[1]),
        req("mu alpha", references[2], prompt_text="beta gamma"),
        req("delta epsilon zeta eta", references[1], prompt_text="alpha beta gamma"),
        req("theta", references[0], voice=VoiceSetting(speed=1.5, pitch=3)),
    ]
    chunks, order = streamed_together(synth, requests, chunk_tokens=3)
    assert sorted(chunks) == list(range(len(requests)))
    for i, request in enumerate(requests):
        assert [last for _, last in chunks[i]].count(True) == 1 and chunks[i][-1][1]
        together = np.concatenate([audio for audio, _ in chunks[i]])
        alone = np.concatenate(stream_chunks(synth, request, chunk_tokens=3))
        np.testing.assert_allclose(together, alone, atol=1e-4)
    # generated together, not one after the other: request 1's first chunk comes before request 0's last
    assert order.index(1) < len(order) - 1 - order[::-1].index(0)


def test_a_stopped_stream_ends_and_the_others_go_on(synth, references, monkeypatch):
    requests = [req(" ".join(["alpha beta gamma delta"] * 3), references[i]) for i in range(3)]
    widths, original = [], synth.fm.sample
    monkeypatch.setattr(
        synth.fm, "sample", lambda **kw: widths.append(kw["tokens"].shape[0]) or original(**kw)
    )
    seen: list[int] = []
    calls_before_stop: list[int] = []

    def stopped(i: int) -> bool:
        if i == 1 and seen.count(1) >= 2:
            calls_before_stop.append(len(widths))
            return True
        return False

    events = []
    for event in synth.stream_batch(requests, chunk_tokens=2, stopped=stopped):
        seen.append(event.index)
        events.append(event)
    assert seen.count(1) == 2 and not any(e.last for e in events if e.index == 1)
    assert widths[0] == 3 and max(widths[calls_before_stop[0] :]) <= 2  # it left flow matching's batch
    for i in (0, 2):
        together = np.concatenate([e.audio for e in events if e.index == i])
        np.testing.assert_allclose(together, np.concatenate(stream_chunks(synth, requests[i], 2)), atol=1e-4)


def test_stream_batch_errors_name_the_request(synth, references):
    requests = [req("alpha", references[0]), req("beta", references[1], voice=VoiceSetting(speed=3.0))]
    with pytest.raises(RequestError, match=r"^requests\[1\]\.voice\.speed") as caught:
        next(synth.stream_batch(requests))
    assert caught.value.index == 1
    with pytest.raises(ValueError, match="chunk_tokens must be an integer >= 1, got 0"):
        next(synth.stream_batch(requests[:1], chunk_tokens=0))
