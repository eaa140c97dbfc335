"""The ECAPA-TDNN head: UniSpeech's state-dict layout, shapes and per-utterance invariants."""

import pytest
import torch

from speech.models.ecapa_tdnn import ECAPATDNN


def unispeech_head_layout(feat_dim=1024, layers=25, c=512, pooled=1536, emb=256, scale=8, se=128, att=128):
    """Key -> shape of UniSpeech's ``ECAPA_TDNN_SMALL`` minus ``feature_extract.*``, from its source."""

    def bn(prefix, n):
        return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}  # fmt: skip

    def conv_relu_bn(prefix, cin, cout, k):
        return {
            f"{prefix}.conv.weight": (cout, cin, k),
            f"{prefix}.conv.bias": (cout,),
            **bn(f"{prefix}.bn", cout),
        }

    keys = {"feature_weight": (layers,), **conv_relu_bn("layer1", feat_dim, c, 5)}
    w = c // scale
    for i in (2, 3, 4):
        p = f"layer{i}"
        keys.update(conv_relu_bn(f"{p}.Conv1dReluBn1", c, c, 1))
        for j in range(scale - 1):
            keys[f"{p}.Res2Conv1dReluBn.convs.{j}.weight"] = (w, w, 3)
            keys[f"{p}.Res2Conv1dReluBn.convs.{j}.bias"] = (w,)
            keys.update(bn(f"{p}.Res2Conv1dReluBn.bns.{j}", w))
        keys.update(conv_relu_bn(f"{p}.Conv1dReluBn2", c, c, 1))
        se_keys = {"linear1.weight": (se, c), "linear1.bias": (se,), "linear2.weight": (c, se),
                   "linear2.bias": (c,)}  # fmt: skip
        keys.update({f"{p}.SE_Connect.{k}": v for k, v in se_keys.items()})
    keys.update({"conv.weight": (pooled, 3 * c, 1), "conv.bias": (pooled,),
                 "pooling.linear1.weight": (att, pooled, 1), "pooling.linear1.bias": (att,),
                 "pooling.linear2.weight": (pooled, att, 1), "pooling.linear2.bias": (pooled,),
                 **bn("bn", 2 * pooled),
                 "linear.weight": (emb, 2 * pooled), "linear.bias": (emb,)})  # fmt: skip
    return keys


def test_state_dict_matches_unispeech_layout_at_protocol_size():
    model = ECAPATDNN()  # feat_dim=1024, 25 hidden states, 256-d: ECAPA_TDNN_SMALL over WavLM-Large
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == unispeech_head_layout()


def small(**kw):
    torch.manual_seed(0)
    return ECAPATDNN(
        feat_dim=16, num_hidden_states=3, channels=32, pooled_channels=48, emb_dim=8, **kw
    ).eval()


def test_small_layout_and_output_shape():
    model = small()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == unispeech_head_layout(feat_dim=16, layers=3, c=32, pooled=48, emb=8)
    out = model(torch.randn(3, 2, 40, 16))
    assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_rows_are_independent_in_eval():
    model = small()
    x = torch.randn(3, 2, 50, 16)
    both = model(x)
    assert torch.allclose(both[1], model(x[:, 1:])[0], atol=1e-5)


def test_layer_weights_are_a_softmax_sum_and_instance_norm_removes_scale():
    model = small()
    with torch.no_grad():
        model.feature_weight.copy_(torch.tensor([0.0, 30.0, 0.0]))  # ~one-hot on layer 1
    x = torch.randn(3, 1, 40, 16)
    only_layer1 = torch.stack([torch.randn(1, 40, 16), x[1], torch.randn(1, 40, 16)])
    assert torch.allclose(model(x), model(only_layer1), atol=1e-4)
    # Per-channel affine rescaling of the features is removed by the instance norm.
    assert torch.allclose(model(x), model(3.0 * x + 0.5), atol=1e-4)


def test_global_context_pooling_widens_attention_input():
    model = small(global_context=True)
    assert model.pooling.linear1.weight.shape == (128, 3 * 48, 1)
    assert model(torch.randn(3, 1, 30, 16)).shape == (1, 8)


def test_rejects_wrong_layer_count():
    with pytest.raises(ValueError, match="layers=3"):
        small()(torch.randn(2, 1, 30, 16))
