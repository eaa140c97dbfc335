"""What the synthesizer checks beyond ``request.validate()`` (issue 17): the reference's measured length and
level, the AR model's length budget (segments that cannot fit, one-shot prompts cut to fit, batches split),
and error messages that name the request of a batch only."""

import functools
import logging
import re

import numpy as np
import pytest
import soundfile as sf

from speech.inference import (
    AudioSetting,
    RequestError,
    SamplingSetting,
    SynthesisRequest,
    Synthesizer,
    TimbreWeight,
    VoiceSetting,
)
from speech.inference.batch_runner import run_meta
from speech.inference.voice import COMMON_FORMATS, check_reference

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
GREEDY = SamplingSetting(temperature=0, noise_scale=0, seed=0)


@pytest.fixture(scope="module")
def synth(checkpoints):
    return Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"])


@pytest.fixture
def max_len(synth, monkeypatch):
    """Sets the AR model's ``max_len`` for one test (the tiny model's 512 holds every short request)."""
    return lambda value: monkeypatch.setattr(synth.ar, "max_len", value)


def req(text, ref, **kwargs):
    return SynthesisRequest(text, reference=ref, sampling=kwargs.pop("sampling", GREEDY), **kwargs)


def syllables(seconds: float, rms_dbfs: float = -20.0, seed: int = 0) -> np.ndarray:
    """A speech-like level contour: a 150 Hz tone switched on and off four times a second over faint noise,
    scaled to ``rms_dbfs``."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wav = np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 4 * t) > 0) + 1e-3 * rng.standard_normal(t.shape)
    return (wav * 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(wav**2))).astype(np.float32)


# Defect 3 (messages): one request alone is not "requests[0]"; a request of a batch is named by its index.
def test_only_a_request_of_a_batch_is_named_by_its_index(synth, references):
    loud = req("alpha", references[0], voice=VoiceSetting(volume=20))
    with pytest.raises(RequestError, match=r"^voice\.volume: must be a number in \(0, 10\]") as err:
        synth.synthesize(loud)
    assert err.value.index is None
    with pytest.raises(RequestError, match=r"^voice\.volume: ") as err:
        next(synth.stream(loud))
    with pytest.raises(RequestError, match=r"^requests\[1\]\.voice\.volume: ") as err:
        synth.synthesize_batch([req("alpha", references[0]), loud])
    assert (err.value.index, err.value.field) == (1, "voice.volume")


# Defect 7: references that cannot give a voice are refused with the measured value and the limit.
@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (syllables(0.3), r"is 0\.3 s long; a reference needs at least 0\.5 s"),
        (np.zeros(SR, dtype=np.float32), r"is silent: digital silence \(all samples 0\); a reference needs a "
         r"peak of at least -60 dBFS"),
        (syllables(1.0, rms_dbfs=-75.0), r"is silent: a peak of -6\d\.\d dBFS; a reference needs a peak "
         r"of at least -60 dBFS"),
        (np.full(SR, np.nan, dtype=np.float32), "holds NaN or infinite samples"),
    ],
)  # fmt: skip
def test_unusable_references_are_refused(synth, references, wav, message):
    with pytest.raises(RequestError, match=rf"^reference: {message}"):
        synth.synthesize(req("alpha", wav))
    mix = [TimbreWeight(references[0], 50), TimbreWeight(wav, 50)]
    with pytest.raises(RequestError, match=rf"^timbre_weights\[1\]\.reference: {message}"):
        synth.synthesize(SynthesisRequest("alpha", timbre_weights=mix, sampling=GREEDY))


# Defect 7: doubtful references are used, with a warning that gives the measured value.
def test_doubtful_references_are_used_with_a_warning(synth):
    assert check_reference(syllables(1.0), SR) == []
    quiet = check_reference(syllables(1.0, rms_dbfs=-50.0), SR)
    assert len(quiet) == 1 and quiet[0].startswith("is quiet: -50.0 dBFS RMS (below -40)")
    t = np.arange(SR) / SR
    (steady,) = check_reference(0.1 * np.sin(2 * np.pi * 200 * t).astype(np.float32), SR)
    assert steady.startswith("has a steady level (0.0 dB between") and "noise or a tone" in steady
    clipped = check_reference(np.clip(syllables(1.0, rms_dbfs=0.0), -1, 1), SR)
    assert any(w.startswith("is clipped: ") and "% of its samples are at full scale" in w for w in clipped)
    result = synth.synthesize(req("alpha", syllables(1.0, rms_dbfs=-50.0)))
    assert result.warnings == [f"reference: {quiet[0]}"] and result.audio.size


# Defect 2: a segment that cannot fit max_len even without a prompt is refused, naming the limit.
def test_a_segment_too_long_for_the_ar_model_is_refused(synth, references, max_len):
    max_len(20)  # "alpha beta": speaker, 2 text tokens, BOS and up to 20 new tokens are 24 positions
    with pytest.raises(
        RequestError,
        match=r"^text: the segment 'alpha beta' is 2 BPE tokens and may need up to 20 audio tokens: 24 "
        r"positions, more than the AR model's max_len of 20\. Lower sampling\.max_tokens",
    ):
        synth.synthesize(req("alpha beta", references[0]))
    capped = synth.synthesize(
        req("alpha beta", references[0], sampling=SamplingSetting(temperature=0, max_tokens=16))
    )
    assert capped.token_counts and capped.token_counts[0] <= 16


# Defect 2: a one-shot prompt too long for the room the text leaves is cut (audio and transcript alike).
def test_a_long_one_shot_prompt_is_cut_to_fit(synth, references, max_len, monkeypatch, caplog):
    max_len(60)  # "alpha beta" takes 24 positions, 36 are left for the prompt: 7 text + 40 audio tokens
    seen = []
    generate = synth.ar.generate
    monkeypatch.setattr(synth.ar, "generate", lambda **kw: seen.append(kw) or generate(**kw))
    request = req("alpha beta", references[2], prompt_text="gamma delta epsilon zeta eta theta")
    result = synth.synthesize(request)
    (inputs,) = seen
    prompt_text, prompt_tokens = int(inputs["prompt_text_lens"][0]), int(inputs["prompt_lens"][0])
    assert prompt_text + prompt_tokens == 36 and 0 < prompt_text < 7 and prompt_tokens < 40
    assert prompt_tokens / 40 >= prompt_text / 7  # the audio keeps at least the transcript's share
    (warning,) = [w for w in result.warnings if w.startswith("prompt_text:")]
    assert warning.startswith(
        f"prompt_text: the one-shot prompt is cut to fit the AR model's max_len of 60: its first "
        f"{prompt_tokens / 25:.2f} s of 1.60 s of audio and {prompt_text} of 7 tokens of the transcript, "
        "up to"
    )
    assert result.token_counts == [20]
    with caplog.at_level(logging.WARNING, logger="speech.inference.synthesizer"):
        streamed = np.concatenate(list(synth.stream(request, chunk_tokens=1000)))
    np.testing.assert_allclose(streamed, result.audio, atol=1e-4)
    assert warning in caplog.messages


def test_a_request_without_room_for_its_prompt_is_refused(synth, references, max_len):
    max_len(30)  # "alpha beta" takes 24 positions; the prompt needs 1 word + 0.5 s (13 tokens)
    with pytest.raises(
        RequestError,
        match=r"^prompt_text: no room for a one-shot prompt: the longest text segment takes 24 of the AR "
        r"model's 30 positions and leaves 6, the prompt needs at least 14 \(its first word and 0\.5 s of "
        r"audio\)",
    ):
        synth.synthesize(req("alpha beta", references[2], prompt_text="gamma delta"))
    assert synth.synthesize(req("alpha beta", references[2])).token_counts == [20]  # zero-shot fits


# Defect 2: rows that fit alone but not together (one with a long prompt, one with a long text) were cut
# short silently by generate's shared length; they now go in separate batches.
def test_rows_that_fit_only_alone_are_generated_apart(synth, references, max_len):
    max_len(120)  # together: the longest prefix (45) and the most new tokens (80) are 125 positions
    requests = [
        req("alpha", references[2], prompt_text="gamma delta"),  # prefix 3 + 42, up to 10 new
        req("alpha beta gamma delta epsilon zeta", references[0], prompt_text="mu"),  # prefix 10 + 21, 80 new
    ]
    alone = [synth.synthesize(r) for r in requests]
    together = synth.synthesize_batch(requests)
    assert [r.token_counts for r in together] == [r.token_counts for r in alone] == [[10], [80]]
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a.audio, b.audio, atol=1e-4)


# Defect 7: an unreadable reference file did not say what a reference may be.
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "an empty file \\(0 bytes\\)"),
        (b"just some text\n", "unreadable audio \\(.*Format not recognised.*\\)"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unreadable audio \\(.*\\)"),  # a header cut short
    ],
)
def test_an_unreadable_reference_file_names_the_formats_a_reference_may_have(
    synth, tmp_path, content, problem
):
    path = tmp_path / "ref.wav"
    path.write_bytes(content)
    with pytest.raises(
        RequestError,
        match=rf"^reference: {re.escape(str(path))}: {problem}; a reference must be an audio file: "
        rf"{', '.join(COMMON_FORMATS)} or another format libsndfile reads",
    ):
        synth.synthesize(req("alpha", path))


# Defect 1: a float wav with NaN samples ended "successfully" with every output sample at -32768.
def test_a_reference_file_with_nan_samples_is_refused(synth, tmp_path):
    wav = syllables(1.0)
    wav[100:200] = np.nan
    sf.write(tmp_path / "nan.wav", wav, SR, subtype="FLOAT")
    with pytest.raises(RequestError, match=r"^reference: holds NaN or infinite samples"):
        synth.synthesize(req("alpha", tmp_path / "nan.wav"))


@pytest.fixture
def broken_decoder(synth, monkeypatch):
    """The Flow-VAE decoder of a broken checkpoint: NaN samples."""
    decode = synth.flow_vae.decode
    monkeypatch.setattr(synth.flow_vae, "decode", lambda *args, **kw: decode(*args, **kw) * float("nan"))


# Defect 1 (the guard at the output): whatever the model makes, no NaN or infinite sample is written in any
# format, nor streamed.
@pytest.mark.usefixtures("broken_decoder")
@pytest.mark.parametrize("fmt", ["wav", "flac", "pcm", "mp3"])
def test_non_finite_model_output_is_never_written_or_streamed(synth, references, tmp_path, fmt):
    result = synth.synthesize(req("alpha", references[0], audio=AudioSetting(format=fmt)))
    with pytest.raises(ValueError, match="the audio holds NaN or infinite samples; nothing is written"):
        result.save(tmp_path / f"o.{fmt}")
    with pytest.raises(ValueError, match="NaN or infinite samples"):
        result.to_bytes()
    assert not list(tmp_path.iterdir())
    chunks = []
    with pytest.raises(ValueError, match="NaN or infinite samples; the stream stops before this chunk"):
        chunks.extend(
            synth.stream(req("alpha", references[0], audio=AudioSetting(format=fmt)), chunk_tokens=4)
        )
    assert chunks == []


# Defect 1 in a meta.lst: a line whose audio comes out non-finite is rejected, the other lines are written.
def test_a_meta_line_with_non_finite_audio_is_rejected_and_the_rest_written(synth, references, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    assemble = synth._assemble

    def broken_for_beta(job):
        result = assemble(job)
        if job.request.text == "beta":
            result.audio[:] = np.nan
        return result

    monkeypatch.setattr(synth, "_assemble", broken_for_beta)
    (tmp_path / "meta.lst").write_text(f"a|x|{references[0]}|alpha\nb|x|{references[1]}|beta\n")
    make = functools.partial(SynthesisRequest, sampling=GREEDY)
    summary = run_meta(synth, tmp_path / "meta.lst", tmp_path / "out", mode="zero_shot", make=make,
                       progress=False)  # fmt: skip
    assert (summary.generated, summary.rejected) == (1, 1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "rejects.tsv"]
    assert (tmp_path / "out" / "rejects.tsv").read_text() == (
        "b\tbad_output\tthe audio holds NaN or infinite samples; nothing is written\n"
    )
    again = run_meta(synth, tmp_path / "meta.lst", tmp_path / "out", mode="zero_shot", make=make,
                     progress=False)  # fmt: skip
    assert again.line() == "generated 0 utterances; skipped 1 existing, rejected 1"  # no "RTF nan"


# Defect 7: white noise gave a "voice" without a word; it is used, with the measured level spread.
def test_white_noise_is_warned_about(synth):
    noise = (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)
    (warning,) = check_reference(noise, SR)
    assert warning.startswith("has a steady level (") and "noise or a tone rather than speech?" in warning
    assert synth.synthesize(req("alpha", noise)).warnings == [f"reference: {warning}"]
