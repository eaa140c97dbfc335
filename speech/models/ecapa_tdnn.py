"""ECAPA-TDNN speaker-embedding head over stacked SSL hidden states, as used by Seed-TTS-eval's SIM.

Seed-TTS-eval scores SIM with UniSpeech's ``ECAPA_TDNN_SMALL(feat_dim=1024, feat_type='wavlm_large')``
(``microsoft/UniSpeech``, ``downstreams/speaker_verification/models/ecapa_tdnn.py``): a softmax-weighted sum
of all WavLM-Large hidden states, instance norm, the ECAPA-TDNN of Desplanques et al. (2020) with 512
channels, attentive statistics pooling over 1536 channels and a 256-d linear embedding. This is an
independent implementation whose ``state_dict`` keys equal that module's keys minus its
``feature_extract.*`` (WavLM) part, so the protocol's fine-tuned checkpoint loads into it unchanged. That
is why some submodules carry CamelCase attribute names (``Conv1dReluBn1``, ``SE_Connect``, ...): they are
checkpoint keys, not style choices.

A quirk of the original kept because the checkpoint was trained with it: every conv block applies ReLU
*before* its BatchNorm.

Legend: l hidden-state layers, b batch, t frames, d SSL feature dim, c channels, e embedding dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class ConvReluBn(nn.Module):
    """Conv1d -> ReLU -> BatchNorm1d (keys ``conv.*``, ``bn.*``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, c_in, t) -> (b, c_out, t)``."""
        return self.bn(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net-style hierarchical dilated conv (keys ``convs.i.*``, ``bns.i.*``).

    The channels are split into ``scale`` groups; group ``i > 0`` is convolved after adding the previous
    group's output, and the last group passes through untouched.

    Args:
        channels: Input and output channels (divisible by ``scale``).
        kernel_size: Kernel of each group conv.
        dilation: Dilation of each group conv; padding keeps the length.
        scale: Number of channel groups.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by scale ({scale})")
        self.width = channels // scale
        n = max(scale - 1, 1)
        pad = dilation * (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            nn.Conv1d(self.width, self.width, kernel_size, padding=pad, dilation=dilation) for _ in range(n)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, c, t) -> (b, c, t)``."""
        groups = torch.split(x, self.width, dim=1)
        outs, prev = [], None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            inp = groups[i] if prev is None else prev + groups[i]
            prev = bn(F.relu(conv(inp)))
            outs.append(prev)
        if len(groups) > len(self.convs):
            outs.append(groups[-1])
        return torch.cat(outs, dim=1)


class SqueezeExcite(nn.Module):
    """Channel gating from the time-averaged input (keys ``linear1.*``, ``linear2.*``)."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, c, t) -> (b, c, t)``."""
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gate[:, :, None]


class SERes2Block(nn.Module):
    """1x1 conv -> Res2 dilated conv -> 1x1 conv -> squeeze-excite, plus a residual.

    Args:
        in_channels: Input channels.
        out_channels: Output channels; a 1x1 ``shortcut`` conv is added when they differ.
        kernel_size: Res2 kernel.
        dilation: Res2 dilation.
        scale: Res2 groups.
        se_bottleneck: Squeeze-excite hidden size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        scale: int,
        se_bottleneck: int,
    ) -> None:
        super().__init__()
        # Attribute names are the UniSpeech checkpoint's keys.
        self.Conv1dReluBn1 = ConvReluBn(in_channels, out_channels)
        self.Res2Conv1dReluBn = Res2Conv(out_channels, kernel_size, dilation, scale)
        self.Conv1dReluBn2 = ConvReluBn(out_channels, out_channels)
        self.SE_Connect = SqueezeExcite(out_channels, se_bottleneck)
        self.shortcut = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, c_in, t) -> (b, c_out, t)``."""
        residual = x if self.shortcut is None else self.shortcut(x)
        h = self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x)))
        return self.SE_Connect(h) + residual


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time (keys ``linear1.*``, ``linear2.*``).

    Args:
        channels: Input channels ``c``; the output has ``2 c``.
        attention_channels: Hidden size of the attention MLP (1x1 convs).
        global_context: Also feed the utterance mean and std to the attention (ECAPA paper's variant;
            the Seed-TTS-eval model does not use it).
    """

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = False) -> None:
        super().__init__()
        self.global_context = global_context
        self.linear1 = nn.Conv1d(channels * (3 if global_context else 1), attention_channels, 1)
        self.linear2 = nn.Conv1d(attention_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, c, t) -> (b, 2 c)``."""
        h = x
        if self.global_context:
            # torch.var is unbiased here, as in the original; 1e-10 keeps sqrt finite on constant channels.
            mean = x.mean(dim=2, keepdim=True).expand_as(x)
            std = torch.sqrt(x.var(dim=2, keepdim=True) + 1e-10).expand_as(x)
            h = torch.cat([x, mean, std], dim=1)
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(h))), dim=2)
        mean = (alpha * x).sum(dim=2)
        var = (alpha * x.square()).sum(dim=2) - mean.square()
        return torch.cat([mean, var.clamp(min=1e-9).sqrt()], dim=1)


class ECAPATDNN(nn.Module):
    """Layer-weighted SSL features -> ECAPA-TDNN -> speaker embedding.

    Defaults reproduce ``ECAPA_TDNN_SMALL(feat_dim=1024, emb_dim=256)`` over WavLM-Large's 25 hidden states
    (the transformer input plus 24 layer outputs).

    Args:
        feat_dim: Dimension ``d`` of each hidden state.
        num_hidden_states: Number ``l`` of stacked hidden states; sizes ``feature_weight``.
        channels: Width of the stem and the three SE-Res2 blocks.
        pooled_channels: Width after the multi-layer aggregation conv (1536 in the original).
        emb_dim: Embedding size ``e``.
        res2_scale: Res2 groups per block.
        se_bottleneck: Squeeze-excite hidden size.
        attention_channels: Attentive-pooling hidden size.
        global_context: Attentive pooling with global context (False for the protocol's model).
    """

    def __init__(
        self,
        feat_dim: int = 1024,
        num_hidden_states: int = 25,
        channels: int = 512,
        pooled_channels: int = 1536,
        emb_dim: int = 256,
        res2_scale: int = 8,
        se_bottleneck: int = 128,
        attention_channels: int = 128,
        global_context: bool = False,
    ) -> None:
        super().__init__()
        self.feat_dim, self.num_hidden_states, self.emb_dim = feat_dim, num_hidden_states, emb_dim
        # Zeros = uniform softmax weights at init, as in the original.
        self.feature_weight = nn.Parameter(torch.zeros(num_hidden_states))
        self.instance_norm = nn.InstanceNorm1d(feat_dim)
        self.layer1 = ConvReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2, self.layer3, self.layer4 = (
            SERes2Block(channels, channels, 3, dilation, res2_scale, se_bottleneck) for dilation in (2, 3, 4)
        )
        self.conv = nn.Conv1d(3 * channels, pooled_channels, 1)
        self.pooling = AttentiveStatsPool(pooled_channels, attention_channels, global_context)
        self.bn = nn.BatchNorm1d(2 * pooled_channels)
        self.linear = nn.Linear(2 * pooled_channels, emb_dim)

    def aggregate(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted layer sum, then per-utterance, per-channel instance norm.

        Args:
            hidden_states: ``(l, b, t, d)`` stacked upstream hidden states.

        Returns:
            ``(b, d, t)`` features. (The original adds 1e-6 before the norm; the norm removes it.)
        """
        if hidden_states.dim() != 4 or hidden_states.shape[0] != self.num_hidden_states:
            raise ValueError(
                f"hidden_states must be (layers={self.num_hidden_states}, batch, frames, dim), "
                f"got {tuple(hidden_states.shape)}"
            )
        weights = torch.softmax(self.feature_weight, dim=0)
        x = torch.einsum("l,lbtd->bdt", weights, hidden_states)
        return self.instance_norm(x)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Embeds utterances (no padding: every frame of every row is used).

        Args:
            hidden_states: ``(l, b, t, d)`` stacked upstream hidden states.

        Returns:
            ``(b, e)`` embeddings (not normalized; SIM is their cosine).
        """
        x = self.aggregate(hidden_states)
        out1 = self.layer1(x)
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        # Multi-layer feature aggregation: the three SE-Res2 outputs, not the stem.
        h = F.relu(self.conv(rearrange([out2, out3, out4], "k b c t -> b (k c) t")))
        return self.linear(self.bn(self.pooling(h)))
