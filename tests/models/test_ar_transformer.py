"""AR Transformer invariants: cached decoding equals a full forward (batch 1 and left-padded batches),
padding invariance, seeds, and the length limits of generation."""

import functools

import pytest
import torch
from torch._dynamo.utils import counters

from speech.models.ar_transformer import MAX_ADVANCE, ARTransformer, _dwell, _PointerHints, pack
from speech.models.speaker_encoder import SpeakerEncoder

pytestmark = pytest.mark.usefixtures("one_thread")
V, TEXT_V, N_MELS = 30, 20, 8


def make_model(seed=0, max_len=256, **options):
    torch.manual_seed(seed)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    model = ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=32, layers=2, heads=2,
                          max_len=max_len, **options).eval()  # fmt: skip
    with torch.no_grad():  # trained-like norm gains: the decoding step folds them into its weights
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model


def padded(lens, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab, (len(lens), max(max(lens), 1)), generator=g)
    lens = torch.tensor(lens)
    return x.masked_fill(torch.arange(x.shape[1])[None] >= lens[:, None], 0), lens


def inputs(text_lens, prompt_text_lens=None, prompt_lens=None, seed=0):
    b = len(text_lens)
    speaker = torch.randn(b, 12, generator=torch.Generator().manual_seed(seed))
    text, tl = padded(text_lens, TEXT_V, seed + 1)
    kw = {"speaker": speaker, "text": text, "text_lens": tl}
    if prompt_text_lens is not None:
        kw["prompt_text"], kw["prompt_text_lens"] = padded(prompt_text_lens, TEXT_V, seed + 2)
        kw["prompt_tokens"], kw["prompt_lens"] = padded(prompt_lens, V, seed + 3)
    return kw


class HeadSpy:
    """Records the head's outputs (the logits of every decoding step) and can bias the EOS logit."""

    def __init__(self, model, eos_bias=0.0):
        self.calls, self.eos, self.bias = [], model.eos_id, eos_bias
        self.handle = model.head.register_forward_hook(self.hook)

    def hook(self, module, args, out):
        out = out.clone()
        out[..., self.eos] += self.bias
        self.calls.append(out.float().clone())  # generate masks EOS in place
        return out


CASES = {
    "batch1": ([5], None, None),
    "batch1_prompt": ([4], [3], [6]),
    "left_padded": ([3, 7, 5], None, None),
    "left_padded_prompt": ([3, 6, 4], [2, 0, 5], [4, 7, 0]),
}


def decode_and_replay(model, kw):
    """Greedy decoding of 2 tokens per text token, and the full forward over what it produced: returns
    ``(tokens, lens, step logits (b, steps, v), full-forward logits)``."""
    spy = HeadSpy(model)
    tokens, lens = model.generate(**kw, temperature=0, min_tokens_per_text=2, max_tokens_per_text=2)
    spy.handle.remove()
    with torch.no_grad():
        out = model(**kw, audio_tokens=tokens, audio_lens=lens)
    return tokens, lens, torch.stack(spy.calls, 1), out.logits


@pytest.mark.parametrize("case", CASES)
def test_cached_decoding_equals_full_forward(case):
    model = make_model()
    kw = inputs(*CASES[case])
    tokens, lens, step_logits, logits = decode_and_replay(model, kw)
    assert torch.equal(lens, 2 * kw["text_lens"])  # EOS masked until 2 per text token, forced after
    for row, n in enumerate(lens.tolist()):
        full, cached = logits[row, :n], step_logits[row, :n]
        assert torch.allclose(full, cached, atol=1e-4), (full - cached).abs().max()
        assert torch.equal(full[:, :V].argmax(-1), tokens[row, :n])  # greedy tokens (EOS was masked)
    assert (tokens[torch.arange(tokens.shape[1])[None] >= lens[:, None]] == 0).all()


def test_bfloat16_decoding_follows_its_full_forward():
    """The decoding step keeps the model's dtype end to end (bf16 on GPU): same math, bf16 tolerance."""
    model = make_model().to(torch.bfloat16)
    kw = inputs(*CASES["left_padded_prompt"])
    kw["speaker"] = kw["speaker"].to(torch.bfloat16)
    _, lens, step_logits, logits = decode_and_replay(model, kw)
    for row, n in enumerate(lens.tolist()):
        assert (logits[row, :n].float() - step_logits[row, :n]).abs().max() < 0.03


def test_generate_rows_match_their_solo_runs():
    model = make_model(1)
    kw = inputs([3, 7, 5], [2, 0, 5], [4, 7, 0])
    tokens, lens = model.generate(**kw, temperature=0, min_tokens_per_text=0, max_tokens=12)
    for row in range(3):
        solo = {k: v[row : row + 1] for k, v in kw.items()}
        solo["text"] = solo["text"][:, : solo["text_lens"].item()]
        t1, l1 = model.generate(**solo, temperature=0, min_tokens_per_text=0, max_tokens=12)
        assert l1.item() == lens[row].item() and torch.equal(t1[0, : l1.item()], tokens[row, : lens[row]])


def test_forward_logits_are_padding_invariant():
    model = make_model(2)
    kw = inputs([3, 6], [2, 4], [5, 1])
    audio, audio_lens = padded([4, 9], V, 7)
    out = model(**kw, audio_tokens=audio, audio_lens=audio_lens)
    for row in range(2):
        n = audio_lens[row].item()
        solo = {k: v[row : row + 1] for k, v in kw.items()}
        for key, lens_key in (("text", "text_lens"), ("prompt_text", "prompt_text_lens"),
                              ("prompt_tokens", "prompt_lens")):  # fmt: skip
            solo[key] = solo[key][:, : solo[lens_key].item()]
        alone = model(**solo, audio_tokens=audio[row : row + 1, :n], audio_lens=audio_lens[row : row + 1])
        assert torch.allclose(out.logits[row, : n + 1], alone.logits[0], atol=1e-5)


def test_speaker_encoder_is_padding_invariant():
    model = make_model()
    mel = torch.randn(2, 50, N_MELS)
    lens = torch.tensor([50, 31])
    both = model.speaker_vector(mel, lens)
    alone = model.speaker_vector(mel[1:, :31], lens[1:])
    assert torch.allclose(both[1], alone[0], atol=1e-5)


def test_same_seed_same_tokens_and_greedy_ignores_seed():
    model = make_model()
    kw = inputs([4, 6])

    def run(seed, temperature=1.0):
        return model.generate(**kw, temperature=temperature, top_k=10, top_p=0.9, max_tokens=15,
                              generator=torch.Generator().manual_seed(seed))  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    g0, g1 = run(0, temperature=0), run(1, temperature=0)
    assert torch.equal(g0[0], g1[0]) and torch.equal(g0[1], g1[1])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_length_limits_follow_the_target_text(temperature):
    model = make_model()
    kw = inputs([2, 5, 3], [4, 1, 2], [3, 3, 8])  # prompt text must not count
    gen = torch.Generator().manual_seed(0)
    limits = {"min_tokens_per_text": 1.5, "max_tokens_per_text": 3.0, "temperature": temperature}
    spy = HeadSpy(model, eos_bias=1e4)  # EOS always wins once allowed
    _, lens = model.generate(**kw, **limits, generator=gen)
    assert lens.tolist() == [3, 8, 5]  # ceil(1.5 * text_lens)
    spy.bias = -1e4  # EOS never sampled: forced stop at the maximum
    tokens, lens = model.generate(**kw, **limits, generator=gen)
    assert lens.tolist() == [6, 15, 9] and tokens.shape == (3, 15)
    assert (tokens < V).all()  # no EOS or BOS among the returned tokens
    _, lens = model.generate(**kw, **limits, max_tokens=7, generator=gen)
    assert lens.tolist() == [6, 7, 7]
    spy.handle.remove()


def test_eos_threshold_stops_a_row_where_eos_is_likely_enough():
    """EOS half as likely as the top token: a draw that never picks it runs to the maximum, an
    ``eos_threshold`` at or below 0.5 stops every row at its minimum length, one above 0.5 does not."""
    model = make_model()
    kw = inputs([2, 5, 3])
    limits = {"min_tokens_per_text": 1.5, "max_tokens_per_text": 3.0, "temperature": 0.0}

    def fixed_logits(module, args, out):
        logits = torch.full_like(out, -1e4)
        logits[..., 1] = 0.0
        logits[..., model.eos_id] = torch.log(torch.tensor(0.5))
        return logits

    handle = model.head.register_forward_hook(fixed_logits)
    assert model.generate(**kw, **limits)[1].tolist() == [6, 15, 9]  # greedy never draws EOS
    assert model.generate(**kw, **limits, eos_threshold=0.6)[1].tolist() == [6, 15, 9]
    assert model.generate(**kw, **limits, eos_threshold=0.4)[1].tolist() == [3, 8, 5]  # min lengths
    tokens, lens = model.generate(**kw, **limits, eos_threshold=0.5)
    assert lens.tolist() == [3, 8, 5] and (tokens[0, :3] == 1).all()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="eos_threshold"):
            model.generate(**kw, **limits, eos_threshold=bad)
    handle.remove()


def test_cache_is_reused_and_training_forward_ignores_it():
    model = make_model()
    kw = inputs([4])
    model.setup_cache(1, 100)
    cache = model.blocks[0].attn.kv_cache
    a = model.generate(**kw, temperature=0, max_tokens=10)
    assert model.blocks[0].attn.kv_cache is cache
    audio, lens = padded([6], V, 3)
    assert torch.isfinite(model(**kw, audio_tokens=audio, audio_lens=lens).loss)
    assert torch.equal(model.generate(**kw, temperature=0, max_tokens=10)[0], a[0])
    model.clear_cache()
    assert model.blocks[0].attn.kv_cache is None


def test_decoding_weights_are_reused_until_a_parameter_changes():
    model, fresh = make_model(), make_model()
    kw = inputs([4, 6])
    greedy = {"temperature": 0, "min_tokens_per_text": 1, "max_tokens": 10}
    model.generate(**kw, **greedy)
    block = model.blocks[0]
    kept = block.step_weights()  # the lean step's copy, made by the generate call above
    assert model._lean_tables(8).weights[0] is kept  # a second generation copies nothing
    with torch.no_grad():  # as an optimizer step does: in place
        for m in (model, fresh):
            m.blocks[0].ffn.w2.weight.mul_(-3.0)
            m.norm.weight.add_(0.5)
    assert block.step_weights() is not kept
    # the step reads the updated weights: the same tokens as a model that never decoded before the update
    assert torch.equal(model.generate(**kw, **greedy)[0], fresh.generate(**kw, **greedy)[0])
    model.clear_cache()
    assert block._step_weights is None


def decode_teacher_forced(model, kw, tokens, *, lean):
    """Logits ``(b, 1 + k, v)`` of prefill + one decoding step per given token ``(b, k)`` (with the text
    hints generation adds when the model has them)."""
    x, lens, _ = pack(model._prefix(**kw), left_pad=True)
    k = tokens.shape[1]
    hints = [None] * (k + 1)
    if model.hint_emb is not None:
        spread = model._spread(kw["text_lens"], model.hint_total(kw["text_lens"]), k + 1)
        hints = model._hints(kw["text"], kw["text_lens"], spread).unbind(1)
        x = torch.cat([x[:, :-1], x[:, -1:] + hints[0][:, None]], 1)
    h, keys = model._prefill(x, lens, k + 1)
    if lean:
        decoding, t = model._decoding(keys), x.shape[1]
        steps = (model._step(tokens[:, i], t + i + 1, decoding, hints[i + 1]) for i in range(k))
    else:  # the blocks' forward, whatever the device
        steps = (model._decode_step(tokens[:, i], keys, (~keys).sum(1), hints[i + 1]) for i in range(k))
    return model.head(torch.stack([h, *steps], 1))


@pytest.mark.parametrize("case", CASES)
def test_training_forward_cached_forward_and_lean_step_give_the_same_logits(case):
    """The three paths of the blocks' math over one model: training ``forward``, prefill + decoding through
    the blocks' ``forward`` with the cache (static shapes, as compiled on GPU), and the lean CPU ``step``;
    float32 logits within 1e-5."""
    model = make_model()
    kw = inputs(*CASES[case])
    prefix = {k: kw.get(k) for k in ("speaker", "text", "text_lens", "prompt_text", "prompt_text_lens",
                                     "prompt_tokens", "prompt_lens")}  # fmt: skip
    audio, lens = padded([5] * len(kw["text_lens"]), V, 4)
    with torch.no_grad():
        full = model(**kw, audio_tokens=audio, audio_lens=lens).logits  # (b, 6, v)
        for lean in (False, True):
            got = decode_teacher_forced(model, prefix, audio, lean=lean)
            torch.testing.assert_close(got, full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("context", [False, True], ids=["hints", "hints_with_context"])
@pytest.mark.parametrize("case", ["batch1_prompt", "left_padded_prompt"])
def test_text_hints_give_the_same_logits_in_training_and_in_both_decoding_paths(case, context):
    """With ``text_hint`` (and ``hint_context``) every path adds the same hints when generation's length
    (``hint_rate`` per text token) is the target's: 5 audio tokens for 4 text tokens."""
    model = make_model(text_hint=True, hint_context=context)
    model.hint_rate.fill_(1.25)
    text_lens, prompt_text_lens, prompt_lens = CASES[case]
    kw = inputs([4] * len(text_lens), prompt_text_lens, prompt_lens)
    audio, lens = padded([5] * len(text_lens), V, 4)
    with torch.no_grad():
        full = model(**kw, audio_tokens=audio, audio_lens=lens).logits
        plain = make_model()(**kw, audio_tokens=audio, audio_lens=lens).logits
        assert not torch.allclose(full, plain, atol=1e-3)  # the hints change what the model sees
        for lean in (False, True):
            got = decode_teacher_forced(model, kw, audio, lean=lean)
            torch.testing.assert_close(got, full, rtol=0, atol=1e-5)


def test_text_hints_spread_the_text_over_the_audio_then_say_end():
    model = make_model(text_hint=True)
    text = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    lens = torch.tensor([3, 4])
    ids = model._hint_ids(text, lens, model._spread(lens, torch.tensor([6, 2]), 8))
    end = TEXT_V  # the middle of each share: 2 steps per text token, then half a text token per step
    assert ids.tolist() == [[3, 3, 4, 4, 5, 5, end, end], [7, 9, end, end, end, end, end, end]]


def test_the_hint_rate_follows_the_training_batches():
    model = make_model(text_hint=True).train()
    kw = inputs([4, 6])  # 10 text tokens
    audio, lens = padded([20, 30], V, 4)  # 50 audio tokens
    model(**kw, audio_tokens=audio, audio_lens=lens)
    assert model.hint_rate.item() == pytest.approx(5.0)  # the first batch sets it
    audio, lens = padded([10, 10], V, 4)  # 2 per text token
    model(**kw, audio_tokens=audio, audio_lens=lens)
    assert model.hint_rate.item() == pytest.approx(0.99 * 5.0 + 0.01 * 2.0)
    model.eval()(**kw, audio_tokens=audio, audio_lens=lens)  # validation leaves it
    assert model.hint_rate.item() == pytest.approx(0.99 * 5.0 + 0.01 * 2.0)
    assert model.hint_total(torch.tensor([2, 10])).tolist() == [10, 50]  # 4.97 per text token, rounded


def test_compiled_decoding_step_does_not_recompile():
    """The model's static-shape step (``_decode_step``) is traced once for every position and padding."""
    model = make_model()
    kw = inputs(*CASES["left_padded_prompt"])
    tokens = padded([6, 6, 6], V, 4)[0]
    with torch.no_grad():
        want = decode_teacher_forced(model, kw, tokens, lean=False)
    torch._dynamo.reset()
    counters.clear()
    eager, model._decode_step = model._decode_step, torch.compile(model._decode_step, backend="eager")
    try:
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
            got = decode_teacher_forced(model, kw, tokens, lean=False)
    finally:
        model._decode_step = eager
        torch._dynamo.reset()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1


def test_prefix_longer_than_max_len_is_an_error():
    model = make_model(max_len=10)
    with pytest.raises(ValueError, match="leaves no room within max_len 10"):
        model.generate(**inputs([12]), temperature=0)


def test_learns_a_tiny_batch():
    model = make_model().train()
    kw = inputs([3, 5], [2, 3], [4, 2])
    audio, lens = padded([6, 8], V, 5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(**kw, audio_tokens=audio, audio_lens=lens)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.2 * losses[0] and out.accuracy.item() > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decoding_through_the_blocks_forward_follows_its_full_forward():
    """Off CPU, decoding runs the blocks' static-shape ``forward`` (not the lean step): same invariant."""
    model = make_model().cuda()
    kw = {k: v.cuda() for k, v in inputs(*CASES["left_padded_prompt"]).items()}
    _, lens, step_logits, logits = decode_and_replay(model, kw)
    for row, n in enumerate(lens.tolist()):
        assert (logits[row, :n] - step_logits[row, :n]).abs().max() < 1e-3  # TF32/SDPA kernels on GPU


def test_tokens_of_two_codebooks_are_learned_and_decoded_whole():
    """Tokens of two residual codebooks (``C = 6``, ``V = 36``): the model fits three random token sequences
    (every code of every token right, and EOS), and greedy decoding (prefill, the lean step, each next-code
    head given the first code just drawn) gives them back exactly."""
    torch.manual_seed(0)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    model = ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=36, audio_codebooks=2, dim=32,
                          layers=2, heads=2, max_len=64)  # fmt: skip
    assert model.head.out_features == 7 and len(model.next_code_heads) == 1
    kw = inputs([3, 4, 2])
    audio, lens = padded([6, 8, 5], 36, 7)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        out = model(**kw, audio_tokens=audio, audio_lens=lens)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert model(**kw, audio_tokens=audio, audio_lens=lens).accuracy.item() == 1.0
    tokens, out_lens = model.generate(**kw, temperature=0, min_tokens_per_text=0, max_tokens_per_text=5)
    assert torch.equal(out_lens, lens) and torch.equal(tokens, audio)


def fit_one_loss(
    model, kw, field: str, *, lr: float, steps: int, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trains ``model`` on one of its ``AROutput`` losses alone; checks that its first gradient reaches block
    ``layer``'s attention, and returns the loss before and after."""
    first = getattr(model(**kw), field)
    first.backward()
    assert model.blocks[layer].attn.qkv.weight.grad.abs().sum() > 0
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        getattr(model(**kw), field).backward()
        optimizer.step()
    return first.detach(), getattr(model(**kw), field).detach()


def test_text_ctc_head_learns_to_spell_the_text_from_the_audio_positions():
    """``text_ctc_weight > 0`` adds a CTC head over the audio positions: its loss is finite, reaches the
    blocks, and falls when the model fits one batch; without it there is no head and no loss."""
    assert (
        make_model().text_ctc is None
        and make_model()(
            **inputs([3]), audio_tokens=padded([6], V, 1)[0], audio_lens=torch.tensor([6])
        ).text_ctc
        is None
    )
    torch.manual_seed(0)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    model = ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=32, layers=2, heads=2,
                          text_ctc_weight=0.5).train()  # fmt: skip
    kw = inputs([3, 4, 2])
    kw.update(zip(("audio_tokens", "audio_lens"), padded([9, 12, 7], V, 7), strict=True))
    first, last = fit_one_loss(model, kw, "text_ctc", lr=3e-3, steps=100, layer=0)
    assert torch.isfinite(first) and first > 0 and last < 0.2 * first
    with pytest.raises(ValueError, match="text_ctc_weight"):
        ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=32, layers=2, heads=2,
                      text_ctc_weight=-1)  # fmt: skip


def aligned_model(**options) -> ARTransformer:
    torch.manual_seed(0)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    return ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=32, layers=2, heads=2,
                         **options)  # fmt: skip


def test_the_alignment_loss_reads_the_audio_steps_against_the_text_with_and_without_a_prompt():
    """``_align_loss`` takes the rows of the audio steps (from BOS: prompt tokens, then target tokens) and the
    columns of the text (prompt text, then target text): attention placed on that diagonal scores near 0,
    the same attention moved onto the audio scores 1."""
    model = aligned_model(align_weight=1.0)
    # row 0: [speaker | text 4 | BOS | tokens 8]
    # row 1: [speaker | prompt text 2, text 3 | BOS | prompt tokens 4, tokens 6]
    text_start, text_lens = torch.tensor([1, 1]), torch.tensor([4, 5])
    bos, steps = torch.tensor([5, 6]), torch.tensor([8, 10])
    t = 17
    on_text, on_audio = torch.zeros(2, 1, t, t), torch.zeros(2, 1, t, t)
    for row in range(2):
        n, k = int(text_lens[row]), int(steps[row])
        for j in range(k):
            q = int(bos[row]) + j
            on_text[row, 0, q, 1 + j * n // k] = 1.0
            on_audio[row, 0, q, q] = 1.0
    assert model._align_loss(on_text, bos, steps, text_start, text_lens) < 0.1
    assert model._align_loss(on_audio, bos, steps, text_start, text_lens) == pytest.approx(1.0)


def test_guided_alignment_trains_the_guided_heads_onto_the_diagonal():
    """``align_weight > 0``: the forward returns the guide's loss of the guided heads (in [0, 1]), its
    gradient reaches them, and a few steps on it alone pull them onto the diagonal; off, there is none."""
    plain = aligned_model()(**inputs([3]), audio_tokens=padded([6], V, 1)[0], audio_lens=torch.tensor([6]))
    assert plain.align is None
    model = aligned_model(align_weight=1.0, align_layers=[1]).train()
    kw = inputs([5, 8, 4], prompt_text_lens=[2, 0, 3], prompt_lens=[4, 0, 5])
    kw.update(zip(("audio_tokens", "audio_lens"), padded([12, 20, 9], V, 7), strict=True))
    first, last = fit_one_loss(model, kw, "align", lr=1e-2, steps=60, layer=1)
    assert 0 < first < 1 and last < 0.5 * first


@pytest.mark.parametrize(
    ("options", "match"),
    [({"align_weight": -1.0}, "align_weight"), ({"align_weight": 1.0, "align_layers": [2]}, "align_layers"),
     ({"align_weight": 1.0, "align_heads": 3}, "align_heads"), ({"align_sigma": 0.0}, "align_sigma"),
     ({"audio_input_dropout": 1.0}, "audio_input_dropout")],
)  # fmt: skip
def test_bad_alignment_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        aligned_model(**options)


def test_audio_input_dropout_acts_in_training_only():
    """Dropped input tokens change the training loss; in eval mode the model is the one without dropout."""
    plain, dropping = aligned_model(), aligned_model(audio_input_dropout=0.5)
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), dropping.state_dict().values(), strict=True)
    )
    kw = {**inputs([4, 6]), "audio_tokens": padded([10, 7], V, 3)[0], "audio_lens": torch.tensor([10, 7])}
    with torch.no_grad():
        assert torch.equal(plain.eval()(**kw).logits, dropping.eval()(**kw).logits)
        assert torch.equal(plain.train()(**kw).logits, plain(**kw).logits)  # no other randomness here
        torch.manual_seed(1)
        assert not torch.equal(dropping.train()(**kw).logits, plain(**kw).logits)


def toy_language(n: int, seed: int) -> dict:
    """Rows whose audio says the text: each text id repeated 2 or 3 times as audio tokens, no speaker; and
    where each text id starts (``text_starts``, which only a ``hint_pointer`` model reads)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 9, (n,), generator=g).tolist()
    texts = [torch.randint(1, TEXT_V, (length,), generator=g) for length in lengths]
    repeats = [torch.randint(2, 4, t.shape, generator=g) for t in texts]
    audio = [t.repeat_interleave(r) for t, r in zip(texts, repeats, strict=True)]
    pad = functools.partial(torch.nn.utils.rnn.pad_sequence, batch_first=True)
    return {"speaker": torch.zeros(n, 12), "text": pad(texts), "text_lens": torch.tensor(lengths),
            "audio_tokens": pad(audio), "audio_lens": torch.tensor([len(a) for a in audio]),
            "text_starts": pad([r.cumsum(0) - r for r in repeats])}  # fmt: skip


def test_the_model_learns_to_read_text_it_has_not_seen():
    """A guard against a model that cannot use its text (the failure that keeps clones at chance): on a toy
    language where the audio spells the text, a few steps teach it to predict the tokens of unseen rows,
    and giving each row another row's text costs it nats per token (the stage's ``val/text_gain``)."""
    torch.manual_seed(0)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    model = ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=64, layers=2, heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        optimizer.zero_grad()
        model(**toy_language(16, seed=step)).loss.backward()
        optimizer.step()
    unseen = toy_language(64, seed=10_000)
    other_text = {"text": unseen["text"].roll(1, 0), "text_lens": unseen["text_lens"].roll(1, 0)}
    with torch.no_grad():
        right, wrong = model.eval()(**unseen), model(**{**unseen, **other_text})
    # a repeat's length is a coin toss, its token is not: about 3 tokens in 4 can be known
    assert right.accuracy > 0.6 and wrong.loss - right.loss > 1.5


def test_a_model_with_text_hints_says_the_text_of_unseen_rows_at_the_hinted_length():
    """The toy language with text hints, then greedy generation: each row's tokens, repeats collapsed, say
    its text, and it stops where the hints put the end (``hint_rate``, 2.5 tokens per text token)."""
    torch.manual_seed(0)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    model = ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=64, layers=2, heads=2,
                          text_hint=True)  # fmt: skip
    said, kw, lens = train_and_say_unseen_rows(model)
    assert model.hint_rate.item() == pytest.approx(2.5, abs=0.15)
    assert said >= 24
    assert (lens - model.hint_total(kw["text_lens"])).abs().le(1).float().mean() >= 0.9


def train_and_say_unseen_rows(model) -> tuple[int, dict, torch.Tensor]:
    """150 steps on the toy language (the token loss plus the pointer head's, if any), then greedy generation
    of 32 unseen rows: ``(rows whose tokens, repeats collapsed, say their text, their inputs, lengths)``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        optimizer.zero_grad()
        out = model(**toy_language(16, seed=step))
        (out.loss if out.advance is None else out.loss + out.advance).backward()
        optimizer.step()
    unseen = toy_language(32, seed=10_000)
    kw = {key: unseen[key] for key in ("speaker", "text", "text_lens")}
    tokens, lens = model.eval().generate(**kw, temperature=0)
    said = [torch.unique_consecutive(row[:n]).tolist() for row, n in zip(tokens, lens, strict=True)]
    texts = [
        torch.unique_consecutive(row[:n]).tolist() for row, n in zip(kw["text"], kw["text_lens"], strict=True)
    ]
    return sum(s == t for s, t in zip(said, texts, strict=True)), kw, lens


def test_the_pointer_says_the_token_started_last_then_the_end():
    model = make_model(text_hint=True, hint_pointer=True)
    starts, text_lens, total = torch.tensor([[0, 2, 5, 0]]), torch.tensor([3]), torch.tensor([7])
    pointer = model._pointer(starts, text_lens, total, 8)
    assert pointer.tolist() == [[0, 0, 1, 1, 1, 2, 2, 3]]  # the padded start (0) is never "started"
    text = torch.tensor([[4, 5, 6, 0]])
    assert model._hint_ids(text, text_lens, pointer).tolist() == [[4, 4, 5, 5, 5, 6, 6, TEXT_V]]


def test_a_pointer_model_needs_hints_and_trains_on_text_starts():
    with pytest.raises(ValueError, match="needs text_hint=true"):
        make_model(hint_pointer=True)
    kw = toy_language(2, seed=0)
    model = make_model(text_hint=True, hint_pointer=True)
    with pytest.raises(ValueError, match="kind=alignments"):
        model(**{k: v for k, v in kw.items() if k != "text_starts"})
    out = model(**kw)
    assert out.advance is not None and out.advance > 0
    assert make_model(text_hint=True)(**kw).advance is None


def test_a_pointer_model_says_the_text_of_unseen_rows_at_the_speeds_it_learned():
    """The toy language with text-aligned hints: the pointer head learns that a text id lasts 2 or 3 audio
    tokens, so greedy generation moves through each unseen row's text at about 2.5 tokens per text id and
    says it, repeats collapsed, then stops."""
    torch.manual_seed(0)
    spk = SpeakerEncoder(N_MELS, dim=16, layers=1, heads=2, out_dim=12)
    model = ARTransformer(spk, text_vocab_size=TEXT_V, audio_vocab_size=V, dim=64, layers=2, heads=2,
                          text_hint=True, hint_pointer=True)  # fmt: skip
    said, kw, lens = train_and_say_unseen_rows(model)
    assert said >= 24
    per_text = lens.float() / kw["text_lens"].float()
    assert 2.0 <= per_text.mean() <= 3.0


def test_the_dwell_counts_the_steps_since_the_pointer_moved():
    pointer = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3], [0, 2, 2, 2, 2, 2, 3, 3]])
    assert _dwell(pointer).tolist() == [[0, 1, 0, 1, 2, 0, 1, 0], [0, 0, 1, 2, 3, 4, 0, 1]]


def test_hint_context_tells_apart_the_parts_of_a_text_token_and_what_follows():
    """The same text token under the pointer gets another hint at another dwell or before another token."""
    with pytest.raises(ValueError, match="needs text_hint=true"):
        make_model(hint_context=True)
    model = make_model(text_hint=True, hint_context=True)
    text, lens = torch.tensor([[4, 5, 6], [4, 7, 6]]), torch.tensor([3, 3])
    hints = model._hints(text, lens, torch.tensor([[0, 0, 0], [0, 0, 0]]))  # dwell 0, 1, 2
    assert not torch.allclose(hints[0, 0], hints[0, 1]) and not torch.allclose(hints[0, 1], hints[0, 2])
    assert not torch.allclose(hints[0], hints[1])  # token 4 before 5, before 7
    plain = make_model(text_hint=True)._hints(text, lens, torch.zeros(2, 3, dtype=torch.long))
    assert torch.equal(plain[0, 0], plain[0, 2]) and torch.equal(plain[0], plain[1])


@pytest.mark.parametrize("context", [False, True], ids=["hints", "hints_with_context"])
def test_generation_moves_the_pointer_hints_as_training_places_them(context):
    """Generation's pointer hints, moved by set advances of the pointer head, are training's hints
    (``_hints``) on the same pointer path: the token under it, and with context the next one and the dwell
    counted step by step."""
    model = make_model(text_hint=True, hint_pointer=True, hint_context=context)
    model.advance_head = torch.nn.Identity()  # h holds the head's logits: exactly one class is possible
    text, text_lens = torch.tensor([[4, 5, 6, 0], [7, 8, 9, 3]]), torch.tensor([3, 4])
    advances = torch.tensor([[0, 1, 0, 0, 1, 2, 0], [1, 0, 3, 0, 0, 1, 1]])
    hints = _PointerHints(model, text, text_lens, torch.float32)
    got = [hints.first()]
    for i, step in enumerate(advances.unbind(1)):
        logits = torch.full((2, MAX_ADVANCE + 1), -1e9).scatter(1, step[:, None], 0.0)
        got.append(hints.after(logits, i))
    path = torch.cat([torch.zeros(2, 1, dtype=torch.long), advances.cumsum(1)], 1)
    path = path.clamp(max=text_lens[:, None])
    assert path.tolist() == [[0, 0, 1, 1, 1, 2, 3, 3], [0, 1, 1, 4, 4, 4, 4, 4]]  # 4, 3: the end
    with torch.no_grad():
        torch.testing.assert_close(torch.stack(got, 1), model._hints(text, text_lens, path), rtol=0, atol=0)
