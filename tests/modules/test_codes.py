"""Tokens of several residual codes: ids <-> codes, the summed embedding, the next-code head's loss, and the
residual quantizer that makes such tokens."""

import pytest
import torch

from speech.modules.codes import (
    CodeEmbedding,
    NextCodeHead,
    code_size,
    join_codes,
    next_code_loss,
    split_codes,
)
from speech.modules.quantizers import ResidualVectorQuantizer, build_quantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ids_and_codes_round_trip_coarsest_code_first():
    ids = torch.arange(5**3).reshape(5, 25)
    codes = split_codes(ids, 5, 3)
    assert codes.shape == (5, 25, 3) and int(codes.max()) == 4
    assert codes[0, 7].tolist() == [2, 1, 0]  # 7 = 2 + 5 * 1
    assert torch.equal(join_codes(codes, 5), ids)


def test_code_size_needs_an_exact_power():
    assert code_size(512 * 512, 2) == 512 and code_size(30, 1) == 30
    with pytest.raises(ValueError, match="not 2 codebooks"):
        code_size(1000, 2)
    with pytest.raises(ValueError, match="at least 1"):
        code_size(16, 0)


def test_one_codebook_is_a_plain_embedding_with_the_old_parameter_names():
    """q = 1 keeps older checkpoints loadable: one ``weight`` of ``V + specials`` rows, nothing else."""
    emb = CodeEmbedding(30, 8, specials=2)
    assert list(emb.state_dict()) == ["weight"] and emb.weight.shape == (32, 8)
    ids = torch.tensor([[0, 29, 31]])
    assert torch.equal(emb(ids), emb.weight[ids])


def test_a_token_is_the_sum_of_its_codes_and_a_special_id_its_own_row():
    torch.manual_seed(0)
    emb = CodeEmbedding(16, 8, codebooks=2, specials=2)  # C = 4, ids 0..15, specials 16 and 17
    assert emb.weight.shape == (6, 8) and len(emb.rest) == 1
    token = 3 + 4 * 2
    assert torch.allclose(emb(torch.tensor(token)), emb.weight[3] + emb.rest[0].weight[2])
    assert torch.allclose(emb(torch.tensor(17)), emb.weight[4 + 1])  # the second special, first table only


def test_next_code_loss_is_teacher_forced_and_skips_invalid_positions():
    torch.manual_seed(0)
    heads = torch.nn.ModuleList([NextCodeHead(8, 4, 1)])
    h = torch.randn(2, 3, 8)
    codes = torch.randint(0, 4, (2, 3, 2))
    valid = torch.tensor([[True, True, False], [True, False, False]])
    loss, right = next_code_loss(heads, h, codes, valid)
    logits = heads[0](h[valid], codes[valid][:, :1])
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, codes[valid][:, 1]))
    assert right.shape == (2, 3, 1) and not right[~valid].any()
    # the head reads the earlier code: another first code changes the logits
    other = (codes[valid][:, :1] + 1) % 4
    assert not torch.allclose(heads[0](h[valid], other), logits)


def test_residual_quantizer_ids_embed_back_to_its_output_and_the_second_stage_helps():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, codebooks=2, codebook_size=8, codebook_dim=4, kmeans_iters=5)
    with torch.no_grad():  # identity projections: each stage's codes live in the space of its input
        for stage in rvq.stages:
            for proj in (stage.proj_in, stage.proj_out):
                proj.weight.copy_(torch.eye(4))
                proj.bias.zero_()
    x, mask = torch.randn(4, 50, 4), torch.ones(4, 50, dtype=torch.bool)
    mask[1, 30:] = False
    rvq.train()
    out = rvq(x, mask)  # k-means on this batch initializes both stages
    assert rvq.codebook_size == 64 and rvq.codebooks == 2
    assert out.indices.shape == (4, 50) and int(out.indices.max()) < 64 and not out.indices[~mask].any()
    rvq.eval()
    with torch.no_grad():
        out = rvq(x, mask)
        assert torch.allclose(rvq.embed(out.indices)[mask], out.quantized[mask], atol=1e-5)
        first = rvq.stages[0].embed(split_codes(out.indices, 8, 2)[..., 0])
    both_error = (out.quantized - x)[mask].pow(2).mean()
    first_error = (first - x)[mask].pow(2).mean()
    assert both_error < 0.7 * first_error


def test_build_quantizer_makes_residual_vq_only():
    assert isinstance(build_quantizer("vq", 8, codebooks=2, vq={"codebook_size": 4}), ResidualVectorQuantizer)
    assert build_quantizer("vq", 8, vq={"codebook_size": 4}).codebooks == 1
    with pytest.raises(ValueError, match="needs kind=vq"):
        build_quantizer("fsq", 8, codebooks=2)
