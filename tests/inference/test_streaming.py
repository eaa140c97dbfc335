"""Streaming pieces: windowed decoding gives the whole decode's samples; chunked rendering joins exactly."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from tiny_pipeline import FLOW_VAE, LATENT

from speech.inference.audio_output import ChunkRenderer, render
from speech.inference.request import AudioSetting, VoiceSetting
from speech.inference.streaming import RADIUS_MARGIN, IncrementalDecoder, receptive_radius

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flow_vae():
    torch.manual_seed(0)
    return instantiate(FLOW_VAE).eval()


@pytest.fixture(scope="module")
def latents():
    return torch.randn(57, LATENT, generator=torch.Generator().manual_seed(1))


def stream(flow_vae, latents, context, sizes):
    decoder, out, start = IncrementalDecoder(flow_vae, context), [], 0
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        out.append(decoder.push(latents[start : start + size], last=last))
        start += size
    return out


def whole(flow_vae, latents):
    with torch.inference_mode():
        return flow_vae.decode(latents[None], torch.tensor([len(latents)]))[0].numpy()


def test_receptive_radius_covers_every_change(flow_vae, latents):
    radius = receptive_radius(flow_vae)
    assert 1 <= radius < 20
    bumped = latents.clone()
    bumped[28] += 1.0
    change = np.abs(whole(flow_vae, bumped) - whole(flow_vae, latents)).reshape(57, -1).max(1)
    assert (change[: 28 - radius] == 0).all() and (change[28 + radius + 1 :] == 0).all()  # nothing beyond
    # ... and not much more than needed: the change reaches within the margin of the radius.
    reach = max(abs(i - 28) for i in np.flatnonzero(change))
    assert radius - RADIUS_MARGIN <= reach <= radius


@pytest.mark.parametrize("sizes", [[57], [10, 10, 10, 27], [1] * 57, [25, 0, 32], [3, 40, 14, 0]])
def test_windowed_decoding_equals_the_whole(flow_vae, latents, sizes):
    pieces = stream(flow_vae, latents, receptive_radius(flow_vae), sizes)
    np.testing.assert_allclose(np.concatenate(pieces), whole(flow_vae, latents), atol=1e-5)


def test_too_little_context_is_not_the_whole(flow_vae, latents):
    pieces = stream(flow_vae, latents, 0, [10, 10, 10, 27])
    assert len(np.concatenate(pieces)) == 57 * flow_vae.hop_length
    assert not np.allclose(np.concatenate(pieces), whole(flow_vae, latents), atol=1e-5)


def test_a_frame_is_held_back_until_its_context_exists(flow_vae, latents):
    context = receptive_radius(flow_vae)
    decoder = IncrementalDecoder(flow_vae, context)
    assert decoder.push(latents[:context]).size == 0
    assert decoder.push(latents[context : context + 5]).size == 5 * flow_vae.hop_length
    with pytest.raises(ValueError, match="context must be >= 0"):
        IncrementalDecoder(flow_vae, -1)


@pytest.mark.parametrize(
    "audio", [AudioSetting(), AudioSetting(sample_rate=44100, channel=2), AudioSetting(sample_rate=8000)]
)
def test_chunk_renderer_joins_into_render(audio):
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    voice = VoiceSetting(volume=3.0)
    renderer = ChunkRenderer(16000, voice, audio)
    chunks = [renderer(wav[i : i + 2500]) for i in range(0, 16000, 2500)] + [renderer(wav[:0], last=True)]
    expected, rate = render(wav, 16000, voice, audio)
    assert renderer.rate == rate == (audio.sample_rate or 16000)
    np.testing.assert_allclose(np.concatenate(chunks), expected, atol=1e-5)
