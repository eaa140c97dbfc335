"""Audio tokens made of several residual codes: one integer id per token, embedded and predicted code by code.

A tokenizer with ``q`` residual codebooks of ``V`` codes each (``quantizers.ResidualVectorQuantizer``)
names a token by the mixed-radix number ``id = c_0 + V c_1 + ... + V^(q-1) c_(q-1)``, so every cache,
prompt, stream and request keeps carrying one id per token; only the layers that look inside a token split
it: ``CodeEmbedding`` (sum of one embedding per code) and ``NextCodeHead`` (the AR model's prediction of
code ``j`` from its hidden state and the codes before ``j``). With ``q = 1`` both are plain layers with the
parameter names of before, so older checkpoints load.

Legend: ... any leading shape, q codebooks, V codes per codebook, d model dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_codes(ids: torch.Tensor, size: int, codebooks: int) -> torch.Tensor:
    """Token ids ``(...)`` in ``[0, size ** codebooks)`` -> their codes ``(..., q)``, coarsest first."""
    return torch.stack([(ids // size**j) % size for j in range(codebooks)], -1)


def join_codes(codes: torch.Tensor, size: int) -> torch.Tensor:
    """Codes ``(..., q)`` -> token ids ``(...)``: the inverse of ``split_codes``."""
    scale = size ** torch.arange(codes.shape[-1], device=codes.device)
    return (codes * scale).sum(-1)


def code_size(vocab_size: int, codebooks: int) -> int:
    """``V`` of a token vocabulary of ``V ** codebooks`` ids.

    Raises:
        ValueError: ``vocab_size`` is not a ``codebooks``-th power.
    """
    if codebooks < 1:
        raise ValueError(f"codebooks must be at least 1, got {codebooks}")
    size = round(vocab_size ** (1 / codebooks))
    if size**codebooks != vocab_size:
        raise ValueError(f"a vocabulary of {vocab_size} tokens is not {codebooks} codebooks of equal size")
    return size


class CodeEmbedding(nn.Embedding):
    """Token ids -> the sum of one learned vector per code. The first codebook's table is this module's own
    ``weight``, with ``specials`` more rows after its ``V`` codes for ids from ``V ** q`` on (the AR model's
    EOS and BOS); a special id gets that row only.

    Args:
        vocab_size: ``V ** q`` token ids (besides the specials).
        dim: Embedding width ``d``.
        codebooks: ``q``.
        specials: Ids after the vocabulary, embedded by the first table alone.
    """

    def __init__(self, vocab_size: int, dim: int, codebooks: int = 1, specials: int = 0) -> None:
        self.size, self.codebooks, self.vocab_size = code_size(vocab_size, codebooks), codebooks, vocab_size
        super().__init__(self.size + specials, dim)
        self.rest = nn.ModuleList(nn.Embedding(self.size, dim) for _ in range(codebooks - 1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(...)`` int ids -> ``(..., d)``."""
        if not self.rest:
            return super().forward(ids)
        special = ids >= self.vocab_size
        codes = split_codes(ids.masked_fill(special, 0), self.size, self.codebooks)
        first = torch.where(special, ids - self.vocab_size + self.size, codes[..., 0])
        out = super().forward(first)
        for j, table in enumerate(self.rest, start=1):
            out = out + table(codes[..., j]).masked_fill(special[..., None], 0.0)
        return out


class NextCodeHead(nn.Module):
    """Logits of code ``j >= 1`` of a token from the hidden state that predicted its first code and the
    codes ``c_0 .. c_(j-1)`` already chosen: ``x = h + sum_i E_i(c_i)``, one pre-norm MLP residual block,
    then a linear map to the ``V`` codes. The MLP lets the earlier codes change how ``h`` is read (a linear
    head would only add a bias per earlier code).

    Args:
        dim: Hidden width ``d``.
        size: Codes per codebook ``V``.
        level: ``j``, how many earlier codes it reads.
    """

    def __init__(self, dim: int, size: int, level: int) -> None:
        super().__init__()
        self.earlier = nn.ModuleList(nn.Embedding(size, dim) for _ in range(level))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, size, bias=False)
        for module in (*self.earlier, self.out):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, h: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """``h (..., d)`` and the earlier codes ``(..., j)`` -> logits ``(..., V)``."""
        x = h
        for i, table in enumerate(self.earlier):
            x = x + table(earlier[..., i])
        x = x + self.mlp(self.norm1(x))
        return self.out(self.norm2(x))


def next_code_loss(
    heads: nn.ModuleList, h: torch.Tensor, codes: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced cross-entropy of codes ``1 .. q-1`` and whether each was the argmax.

    Args:
        heads: ``NextCodeHead`` of codes ``1 .. q-1``.
        h: ``(..., d)`` hidden states that predicted the first codes.
        codes: ``(..., q)`` target codes.
        valid: ``(...)`` positions that hold a real token (not EOS, not padding).

    Returns:
        ``(loss, right (..., q-1) bool)``: the per-code mean losses over ``valid``, summed, and the argmax
        hits.
    """
    loss, right = h.new_zeros((), dtype=torch.float32), []
    for j, head in enumerate(heads, start=1):
        logits = head(h[valid], codes[valid][:, :j]).float()
        loss = loss + F.cross_entropy(logits, codes[valid][:, j]) if len(logits) else loss
        hit = torch.zeros_like(valid)
        hit[valid] = logits.argmax(-1) == codes[valid][:, j]
        right.append(hit)
    return loss, torch.stack(right, -1)
