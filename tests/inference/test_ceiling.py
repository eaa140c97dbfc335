"""Ceiling rows: the ground truth through the Flow-VAE alone, and its own tokens through flow matching, with
no AR model loaded."""

import numpy as np
import pytest
import soundfile as sf
import torch

from speech.inference import SamplingSetting, Synthesizer
from speech.inference.ceiling import KINDS, CeilingModels, render_ceiling, run_ceiling
from speech.inference.voice import load_reference

pytestmark = pytest.mark.usefixtures("one_thread")
NOISELESS = SamplingSetting(noise_scale=0.0, seed=0)
SAMPLES_PER_TOKEN = 640  # hop 320 x 2 latent frames per token


@pytest.fixture(scope="module")
def models(checkpoints):
    """The stages after the AR model, from the flow-matching checkpoint alone (its upstream paths)."""
    return CeilingModels.from_checkpoints(checkpoints["fm"])


@pytest.fixture(scope="module")
def waves(models, references):
    return [load_reference(p, models.sample_rate) for p in references]


def test_resynthesis_is_the_flow_vae_decoding_its_posterior_mean(models, waves):
    out = render_ceiling(models, "resynthesis", waves[:2], waves[:2])
    for truth, wav in zip(waves[:2], out, strict=True):
        with torch.inference_mode():
            x = torch.from_numpy(truth)[None]
            latents, lens = models.flow_vae.encode(x, torch.tensor([len(truth)]))
            tokens = len(truth) // 640  # 25 Hz tokens; the latents are cut to two frames per token
            alone = models.flow_vae.decode(latents[:, : 2 * tokens], torch.tensor([2 * tokens]))[0].numpy()
        assert wav.shape == alone.shape and len(wav) <= len(truth)
        np.testing.assert_allclose(wav, alone, atol=1e-4)


def test_oracle_tokens_follow_the_truths_length_and_the_references_voice(models, waves):
    long_truth, short_truth = waves[2], waves[0]
    truths = [long_truth, short_truth]
    same = render_ceiling(models, "oracle_tokens", truths, [waves[0], waves[0]], NOISELESS)
    again = render_ceiling(models, "oracle_tokens", truths, [waves[0], waves[0]], NOISELESS)
    other = render_ceiling(models, "oracle_tokens", truths, [waves[1], waves[0]], NOISELESS)
    assert len(same[0]) > len(same[1]) and len(same[0]) % SAMPLES_PER_TOKEN == 0
    assert abs(len(same[0]) - len(long_truth)) < 2 * SAMPLES_PER_TOKEN
    assert all(np.isfinite(w).all() for w in same)
    np.testing.assert_array_equal(same[0], again[0])
    assert not np.allclose(same[0], other[0])  # the reference's speaker vector conditions flow matching
    np.testing.assert_allclose(same[1], other[1], atol=1e-5)  # the same reference: the same row


def test_they_render_as_the_whole_pipelines_stages_do(models, checkpoints, waves):
    whole = Synthesizer.from_checkpoints(checkpoints["ar"], checkpoints["fm"])
    same = CeilingModels(whole.voice, whole.fm, whole.flow_vae)
    for kind in KINDS:
        alone = render_ceiling(models, kind, waves[:2], waves[1:3], NOISELESS)
        within = render_ceiling(same, kind, waves[:2], waves[1:3], NOISELESS)
        for a, b in zip(alone, within, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no AR speaker encoder"):
        models.voice.reference_vectors(waves[:1])


def test_bad_arguments_are_refused(models, waves):
    with pytest.raises(ValueError, match=r"kind must be one of \['resynthesis', 'oracle_tokens'\]"):
        render_ceiling(models, "oracle", waves[:1], waves[:1])
    with pytest.raises(ValueError, match="2 truths but 1 references"):
        render_ceiling(models, "resynthesis", waves[:2], waves[:1])


def test_a_meta_list_is_rendered_once_and_resumed(models, references, tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text(
        f"a|x|{references[0]}|alpha|{references[2]}\nb|x|{references[1]}|beta|{references[1]}\nbroken line\n"
    )
    out = tmp_path / "out"
    first = run_ceiling(models, meta, out, kind="oracle_tokens", sampling=NOISELESS, progress=False)
    assert (first.generated, first.skipped, first.rejected) == (2, 0, 1)
    assert sorted(p.name for p in out.glob("*.wav")) == ["a.wav", "b.wav"]
    assert "bad_meta_line" in (out / "rejects.tsv").read_text()
    a = sf.read(out / "a.wav")[0]
    assert abs(len(a) - len(sf.read(references[2])[0])) < 2 * SAMPLES_PER_TOKEN  # gt_wav, not prompt_wav
    second = run_ceiling(models, meta, out, kind="oracle_tokens", sampling=NOISELESS, progress=False)
    assert (second.generated, second.skipped) == (0, 2)


def test_a_meta_list_without_ground_truth_is_refused_naming_a_line(models, references, tmp_path):
    meta = tmp_path / "meta.lst"
    meta.write_text(f"a|x|{references[0]}|alpha\n")
    with pytest.raises(ValueError, match="no gt_wav .*e.g. a"):
        run_ceiling(models, meta, tmp_path / "out", kind="resynthesis", progress=False)
