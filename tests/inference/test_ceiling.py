"""Ceiling rows: the ground truth through the Flow-VAE alone, and its own tokens through flow matching."""

import numpy as np
import pytest
import soundfile as sf
import torch

from speech.inference import SamplingSetting, Synthesizer
from speech.inference.ceiling import render_ceiling, run_ceiling
from speech.inference.voice import load_reference

pytestmark = pytest.mark.usefixtures("one_thread")
NOISELESS = SamplingSetting(noise_scale=0.0, seed=0)
SAMPLES_PER_TOKEN = 640  # hop 320 x 2 latent frames per token


class _NoAR(torch.nn.Module):
    """Stands in for the AR model: the ceiling rows must never generate tokens."""

    def generate(self, *args, **kwargs):
        raise AssertionError("the AR model was used")


@pytest.fixture(scope="module")
def synth(checkpoints):
    synth = Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"])
    synth.ar = _NoAR()
    return synth


@pytest.fixture(scope="module")
def waves(synth, references):
    return [load_reference(p, synth.sample_rate) for p in references]


def test_resynthesis_is_the_flow_vae_decoding_its_posterior_mean(synth, waves):
    out = render_ceiling(synth, "resynthesis", waves[:2], waves[:2])
    for truth, wav in zip(waves[:2], out, strict=True):
        with torch.inference_mode():
            x = torch.from_numpy(truth)[None]
            latents, lens = synth.flow_vae.encode(x, torch.tensor([len(truth)]))
            tokens = len(truth) // 640  # 25 Hz tokens; the latents are cut to two frames per token
            alone = synth.flow_vae.decode(latents[:, : 2 * tokens], torch.tensor([2 * tokens]))[0].numpy()
        assert wav.shape == alone.shape and len(wav) <= len(truth)
        np.testing.assert_allclose(wav, alone, atol=1e-4)


def test_oracle_tokens_follow_the_truths_length_and_the_references_voice(synth, waves):
    long_truth, short_truth = waves[2], waves[0]
    same = render_ceiling(synth, "oracle_tokens", [long_truth, short_truth], [waves[0], waves[0]], NOISELESS)
    again = render_ceiling(synth, "oracle_tokens", [long_truth, short_truth], [waves[0], waves[0]], NOISELESS)
    other = render_ceiling(synth, "oracle_tokens", [long_truth, short_truth], [waves[1], waves[0]], NOISELESS)
    assert len(same[0]) > len(same[1]) and len(same[0]) % SAMPLES_PER_TOKEN == 0
    assert abs(len(same[0]) - len(long_truth)) < 2 * SAMPLES_PER_TOKEN
    assert all(np.isfinite(w).all() for w in same)
    np.testing.assert_array_equal(same[0], again[0])
    assert not np.allclose(same[0], other[0])  # the reference's speaker vector conditions flow matching
    np.testing.assert_allclose(same[1], other[1], atol=1e-5)  # the same reference: the same row


def test_bad_arguments_are_refused(synth, waves):
    with pytest.raises(ValueError, match=r"kind must be one of \['resynthesis', 'oracle_tokens'\]"):
        render_ceiling(synth, "oracle", waves[:1], waves[:1])
    with pytest.raises(ValueError, match="2 truths but 1 references"):
        render_ceiling(synth, "resynthesis", waves[:2], waves[:1])


def test_a_meta_list_is_rendered_once_and_resumed(synth, references, tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text(
        f"a|x|{references[0]}|alpha|{references[2]}\nb|x|{references[1]}|beta|{references[1]}\nbroken line\n"
    )
    out = tmp_path / "out"
    first = run_ceiling(synth, meta, out, kind="oracle_tokens", sampling=NOISELESS, progress=False)
    assert (first.generated, first.skipped, first.rejected) == (2, 0, 1)
    assert sorted(p.name for p in out.glob("*.wav")) == ["a.wav", "b.wav"]
    assert "bad_meta_line" in (out / "rejects.tsv").read_text()
    a = sf.read(out / "a.wav")[0]
    assert abs(len(a) - len(sf.read(references[2])[0])) < 2 * SAMPLES_PER_TOKEN  # gt_wav, not prompt_wav
    second = run_ceiling(synth, meta, out, kind="oracle_tokens", sampling=NOISELESS, progress=False)
    assert (second.generated, second.skipped) == (0, 2)


def test_a_meta_list_without_ground_truth_is_refused_naming_a_line(synth, references, tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text(f"a|x|{references[0]}|alpha\n")
    with pytest.raises(ValueError, match="no gt_wav .*e.g. a"):
        run_ceiling(synth, meta, tmp_path / "out", kind="resynthesis", progress=False)
