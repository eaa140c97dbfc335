"""The flow-matching model: the loss covers only generated frames, CFG is one batched call, the solvers
agree as steps grow, sampling returns the frames after the prompt, and a tiny model overfits a batch."""

import pytest
import torch
from torch import nn

from speech.models.flow_matching import FlowMatching
from speech.models.speaker_encoder import SpeakerEncoder
from speech.modules.dit import DiT
from speech.tensors import lengths_to_mask

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, LATENT, SPK = 20, 4, 8


def make_model(estimator=None, *, randomize: bool = True, seed: int = 0, **kwargs) -> FlowMatching:
    torch.manual_seed(seed)
    estimator = estimator or DiT(32, 2, 2, LATENT)
    model = FlowMatching(estimator, SpeakerEncoder(8, 16, 1, 2, SPK), token_vocab_size=VOCAB,
                         latent_dim=LATENT, **kwargs)  # fmt: skip
    if randomize:  # adaLN-Zero starts at a zero velocity: make the untrained estimator non-trivial
        for name, p in model.estimator.named_parameters():
            if "ada" in name or "proj_out" in name:
                nn.init.normal_(p, std=0.2)
    return model.eval()


class ConstantEstimator(nn.Module):
    """Predicts a fixed velocity whatever its inputs: the loss then depends on the targets alone."""

    dim, out_dim = 32, LATENT

    def __init__(self):
        super().__init__()
        self.v = nn.Parameter(torch.linspace(-1, 1, LATENT))

    def forward(self, x, t, cond, valid):
        return self.v.expand(*valid.shape, -1) * valid[..., None]


def batch(seed: int = 0, token_lens=(12, 9, 5)):
    g = torch.Generator().manual_seed(seed)
    token_lens = torch.tensor(token_lens)
    k = int(token_lens.max())
    off_by_one = torch.tensor([1, -1, 0, 1])[: len(token_lens)]  # the latent cache can be a frame off
    latent_lens = 2 * token_lens + off_by_one
    return {
        "tokens": torch.randint(0, VOCAB, (len(token_lens), k), generator=g),
        "token_lens": token_lens,
        "latents": torch.randn(len(token_lens), int(latent_lens.max()), LATENT, generator=g),
        "latent_lens": latent_lens,
        "speaker": torch.randn(len(token_lens), SPK, generator=g),
    }


def loss_of(model, b, seed=0):
    return model(**b, generator=torch.Generator().manual_seed(seed))


def test_loss_covers_only_valid_frames_after_the_prompt():
    model = make_model(ConstantEstimator(), prompt_prob=1.0, max_prompt_ratio=0.6, cond_dropout=0.0)
    b = batch()
    out = loss_of(model, b)
    prompt = out.prompt_lens
    assert (prompt > 0).all() and (prompt % 2 == 0).all()
    covered = torch.minimum(2 * b["token_lens"], b["latent_lens"]) - prompt
    assert torch.equal(out.loss_frames, covered)
    changed = {**b, "latents": b["latents"].clone()}
    for i, p in enumerate(prompt.tolist()):
        changed["latents"][i, :p] += 5.0  # inside the prompt
        changed["latents"][i, int(covered[i] + p) :] -= 7.0  # padding and the extra cached frame
    assert loss_of(model, changed).loss == out.loss
    changed["latents"][1, int(prompt[1])] += 1.0  # first generated frame
    assert loss_of(model, changed).loss != out.loss


def test_padding_latents_do_not_change_the_loss_of_the_real_model():
    model = make_model(prompt_prob=0.5, cond_dropout=0.3)
    b = batch()
    reference = loss_of(model, b, seed=3).loss
    padded = {**b, "latents": b["latents"].clone(), "tokens": b["tokens"].clone()}
    for i, n in enumerate(b["token_lens"].tolist()):
        padded["tokens"][i, n:] = VOCAB - 1
        padded["latents"][i, min(2 * n, int(b["latent_lens"][i])) :] = 9.0
    torch.testing.assert_close(loss_of(model, padded, seed=3).loss, reference)
    padded["latents"][2, 0] += 1.0
    assert loss_of(model, padded, seed=3).loss != reference


def conditions(model, b, prompt_frames=(4, 0, 2)):
    frames = 2 * b["tokens"].shape[1]
    prompt = torch.zeros(len(b["tokens"]), frames, LATENT)
    for i, p in enumerate(prompt_frames):
        prompt[i, :p] = b["latents"][i, :p]
    return {"token_cond": model.upsampler(b["tokens"], b["token_lens"]), "prompt": prompt,
            "speaker": b["speaker"], "valid": lengths_to_mask(2 * b["token_lens"], frames)}  # fmt: skip


@torch.no_grad()
def test_batched_cfg_equals_two_separate_calls():
    model, b = make_model(), batch()
    cond = conditions(model, b)
    x, t = torch.randn_like(cond["prompt"]), torch.tensor([0.1, 0.5, 0.9])
    calls = []
    model.estimator.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    guided = model.guided_velocity(x, t, cond, 0.7)
    assert calls == [6]  # one estimator call on the 2b stacked rows
    v_cond = model.estimate(x, t, **cond)
    v_uncond = model.estimate(x, t, token_cond=torch.zeros_like(cond["token_cond"]),
                              prompt=torch.zeros_like(x), speaker=torch.zeros_like(b["speaker"]),
                              valid=cond["valid"])  # fmt: skip
    torch.testing.assert_close(guided, 1.7 * v_cond - 0.7 * v_uncond, atol=1e-5, rtol=1e-4)
    assert (v_cond - v_uncond).abs().max() > 1e-3
    torch.testing.assert_close(model.guided_velocity(x, t, cond, 0.0), v_cond)


def sample(model, b, steps, solver, prompt_tokens=(3, 0, 1), seed=0):
    prompt_lens = 2 * torch.tensor(prompt_tokens)
    return model.sample(
        tokens=b["tokens"], token_lens=b["token_lens"], speaker=b["speaker"],
        prompt_latents=b["latents"][:, :6], prompt_lens=prompt_lens, steps=steps, solver=solver,
        cfg_scale=0.5, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def test_sample_returns_the_frames_after_the_prompt():
    model, b = make_model(), batch()
    z, lens = sample(model, b, 3, "euler")
    assert torch.equal(lens, 2 * (b["token_lens"] - torch.tensor([3, 0, 1])))
    assert z.shape == (3, int(lens.max()), LATENT)
    assert torch.all(z[0, lens[0] :] == 0) and z[1].abs().min() > 0
    z2, lens2 = model.sample(tokens=b["tokens"], token_lens=b["token_lens"], speaker=b["speaker"], steps=2)
    assert torch.equal(lens2, 2 * b["token_lens"]) and z2.shape == (3, 24, LATENT)


def test_euler_and_midpoint_converge_to_each_other():
    model, b = make_model(), batch()
    gaps = []
    for steps in (2, 8, 32):
        (ze, le), (zm, lm) = sample(model, b, steps, "euler"), sample(model, b, steps, "midpoint")
        assert torch.equal(le, lm) and ze.shape == zm.shape
        gaps.append((ze - zm).abs().max().item())
    assert gaps[0] > 1e-3 and gaps[2] < 0.35 * gaps[0] and gaps[1] > gaps[2], gaps
    z_fine, _ = sample(model, b, 64, "midpoint")
    assert (z_fine - sample(model, b, 32, "midpoint")[0]).abs().max() < gaps[2]


def test_prompt_and_cfg_change_the_sample():
    model, b = make_model(), batch()
    base, _ = sample(model, b, 4, "euler")
    assert (sample(model, b, 4, "euler", seed=1)[0] - base).abs().max() > 1e-3
    other = {**b, "latents": b["latents"] + 1.0}
    assert (sample(model, other, 4, "euler")[0] - base).abs().max() > 1e-3


def test_error_messages():
    model, b = make_model(), batch()
    with pytest.raises(ValueError, match="solver must be one of"):
        sample(model, b, 2, "rk45")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(model, b, 0, "euler")
    with pytest.raises(ValueError, match="exceed the frames"):
        sample(model, b, 2, "euler", prompt_tokens=(3, 0, 6))
    with pytest.raises(ValueError, match="time_schedule must be one of"):
        make_model(time_schedule="cosine")
    with pytest.raises(ValueError, match="estimator.out_dim 5 != latent_dim 4"):
        make_model(DiT(32, 1, 2, 5))


@pytest.mark.parametrize("schedule", ["uniform", "logit_normal"])
def test_overfits_one_batch(schedule):
    """Latents that are a function of the tokens (plus a speaker offset) are learned from one batch."""
    torch.manual_seed(0)
    b = batch(token_lens=(16, 12, 10, 14))
    table = torch.randn(VOCAB, LATENT)
    lat = table[b["tokens"]].repeat_interleave(2, dim=1) + 0.5 * b["speaker"][:, None, :LATENT]
    b["latents"], b["latent_lens"] = lat, 2 * b["token_lens"]
    model = make_model(DiT(48, 2, 2, LATENT), randomize=False, time_schedule=schedule, prompt_prob=0.5,
                       cond_dropout=0.1).train()  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def evaluate():
        with torch.no_grad():
            return sum(loss_of(model, b, seed=s).loss.item() for s in range(4)) / 4

    start = evaluate()
    for _ in range(150):
        loss = model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate() < 0.3 * start


def test_tokens_of_two_codebooks_condition_on_both_codes():
    """``token_codebooks=2`` (16 ids = two codebooks of 4): tokens that differ only
    in their second code give different conditions; one codebook keeps the parameter names of before."""
    one = make_model()
    assert [k for k in one.state_dict() if "upsampler.embed" in k] == ["upsampler.embed.weight"]
    torch.manual_seed(0)
    two = FlowMatching(DiT(32, 2, 2, LATENT), SpeakerEncoder(8, 16, 1, 2, SPK), token_vocab_size=16,
                       latent_dim=LATENT, token_codebooks=2).eval()  # fmt: skip
    assert two.upsampler.embed.weight.shape == (4, 32) and len(two.upsampler.embed.rest) == 1
    lens = torch.tensor([3])
    with torch.no_grad():
        a = two.upsampler(torch.tensor([[1, 2, 3]]), lens)
        b = two.upsampler(torch.tensor([[1, 2 + 4, 3]]), lens)  # the middle token's second code 0 -> 1
    assert not torch.allclose(a[:, 2:4], b[:, 2:4])
    with pytest.raises(ValueError, match="not 2 codebooks"):
        FlowMatching(DiT(32, 2, 2, LATENT), SpeakerEncoder(8, 16, 1, 2, SPK), token_vocab_size=20,
                     latent_dim=LATENT, token_codebooks=2)  # fmt: skip
