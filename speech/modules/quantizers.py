"""Vector quantizers for the audio tokenizer: FSQ and an EMA vector quantizer, behind one interface.

- ``FSQ`` (Mentzer et al., 2023, "Finite Scalar Quantization"): project to a few dimensions, bound each one
  and round it to one of ``levels[i]`` values (straight-through gradient). No codebook to learn, so no
  collapse; CosyVoice 2 reports 100 % use of its 6561 FSQ codes versus 23 % for VQ (notes section 3.5).
- ``EMAVectorQuantizer`` (van den Oord et al., 2017; Razavi et al., 2019): nearest-neighbour lookup in a
  codebook updated by exponential moving averages, initialised by k-means on the first batch, with
  dead codes restarted from random encoder outputs.
- ``ResidualVectorQuantizer``: ``q`` EMA vector quantizers, each quantizing what the ones before left; a
  token's id is the mixed-radix number of its codes (``speech.modules.codes``).

All take a padding mask: padded frames are never counted in codebook statistics, EMA updates or losses.

Legend: b batch, t frames, d model dim, c code dim, k codebook size, l FSQ levels (one per code dim).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from speech.modules.codes import join_codes, split_codes

# k-means starts from frames drawn with replacement when a batch has fewer frames than codes; this much
# noise (relative to the frames' spread) keeps the repeated draws from being identical centres.
KMEANS_JITTER = 1e-3


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (b, t, d) straight-through quantized vectors, zero on padding
    indices: torch.Tensor  # (b, t) code ids, 0 on padding
    loss: torch.Tensor  # scalar commitment loss (0 for FSQ)
    usage: torch.Tensor  # scalar fraction of the codebook used by the valid frames of this batch
    perplexity: torch.Tensor  # scalar exp(entropy) of the code histogram of this batch


def code_histogram(indices: torch.Tensor, mask: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code over the valid frames: ``(b, t)`` ids and mask -> ``(k,)`` float counts."""
    return torch.bincount(indices[mask].flatten(), minlength=codebook_size).float()


def usage_and_perplexity(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of codes used at least once, and ``exp(entropy)`` of the code distribution."""
    total = counts.sum().clamp(min=1.0)
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return (counts > 0).float().mean(), torch.exp(entropy)


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sums ``x`` over DDP ranks (no-op without a process group), so every rank keeps the same codebook."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


def _broadcast(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(x, src=0)
    return x


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Ids ``(n,)`` of the nearest rows of ``codebook (k, d)`` to the rows of ``x (n, d)``: squared Euclidean
    distance in float32 even under bf16 autocast (where near ties would otherwise pick codes at random),
    ``chunk`` rows at a time so that an ``(n, k)`` distance matrix never exists at once."""
    if not len(x):
        return torch.zeros(0, dtype=torch.long, device=x.device)
    with torch.autocast(x.device.type, enabled=False):
        x, codebook = x.float(), codebook.float()
        book_sq = codebook.pow(2).sum(1)
        ids = [(part.pow(2).sum(1, keepdim=True) - 2 * part @ codebook.t() + book_sq).argmin(1)
               for part in x.split(chunk)]  # fmt: skip
    return torch.cat(ids)


def lloyd_kmeans(x: torch.Tensor, centres: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` of Lloyd's algorithm on ``x (n, d)`` from ``centres (k, d)``: the new ``(k, d)``
    float32 centres. A centre left without vectors keeps its place. Counts and sums are summed over DDP
    ranks, so every rank ends with the same centres from its own vectors."""
    x, centres = x.float(), centres.float().clone()
    for _ in range(iterations):
        ids = nearest_code(x, centres)
        counts = _all_reduce(torch.bincount(ids, minlength=len(centres)).float())
        sums = _all_reduce(torch.zeros_like(centres).index_add_(0, ids, x))
        used = counts > 0
        centres[used] = sums[used] / counts[used, None]
    return centres


def fit_residual_kmeans(
    x: torch.Tensor, sizes: Sequence[int], iterations: int = 25, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Residual k-means: the first codebook quantizes ``x (n, d)``, each next one what the ones before
    left. A diagnostic of how much a token of ``sizes`` codes can say about continuous features
    (``scripts/resynthesize.py codebooks=[...]``), not a trained quantizer.

    Args:
        x: ``(n, d)`` vectors.
        sizes: Codes per codebook, e.g. ``[512]`` or ``[512, 512]``.
        iterations: Lloyd iterations per codebook (``lloyd_kmeans``).
        generator: Draws the initial centres (distinct rows of the residuals).

    Returns:
        One ``(k, d)`` codebook per entry of ``sizes``.

    Raises:
        ValueError: a size is below 1 or above the number of vectors.
    """
    books, residual = [], x.float()
    for k in sizes:
        if not 1 <= k <= len(x):
            raise ValueError(f"codebook size {k} must be in [1, {len(x)}] (the number of vectors)")
        start = residual[torch.randperm(len(x), generator=generator)[:k]]
        books.append(lloyd_kmeans(residual, start, iterations))
        residual = residual - books[-1][nearest_code(residual, books[-1])]
    return books


def residual_quantize(x: torch.Tensor, books: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x (n, d)`` replaced by the sum of one code of each codebook, chosen greedily, first to last
    (codebooks of ``fit_residual_kmeans``)."""
    q = torch.zeros_like(x, dtype=torch.float32)
    for book in books:
        q = q + book[nearest_code(x.float() - q, book)]
    return q.to(x.dtype)


class Quantizer(nn.Module, ABC):
    """Shape contract of a quantizer.

    ``forward(x (b, t, d), mask (b, t)) -> QuantizerOutput``; ``embed(ids (b, t)) -> (b, t, d)``.
    """

    codebook_size: int  # token ids
    codebooks: int = 1  # residual codes per token (``codebook_size = codes per codebook ** codebooks``)

    @abstractmethod
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> QuantizerOutput: ...

    @abstractmethod
    def embed(self, indices: torch.Tensor) -> torch.Tensor: ...

    def _output(self, quantized, indices, mask, loss) -> QuantizerOutput:
        quantized = quantized.masked_fill(~mask[..., None], 0.0)
        indices = indices.masked_fill(~mask, 0)
        usage, ppl = usage_and_perplexity(code_histogram(indices, mask, self.codebook_size))
        return QuantizerOutput(quantized, indices, loss, usage, ppl)


class FSQ(Quantizer):
    """Finite scalar quantization with input/output projections.

    Args:
        dim: Width of the vectors to quantize.
        levels: Values per code dimension; the codebook size is their product (e.g. ``[7, 5, 5, 5, 5]``
            = 4375 codes, the FSQ paper's choice near 2^12).
        eps: Keeps the bounded values strictly inside the outermost rounding interval.
    """

    def __init__(self, dim: int, levels: Sequence[int] = (7, 5, 5, 5, 5), eps: float = 1e-3) -> None:
        super().__init__()
        if any(level < 2 for level in levels):
            raise ValueError(f"every FSQ level must be >= 2, got {list(levels)}")
        levels_t = torch.tensor(list(levels), dtype=torch.long)
        self.register_buffer("levels", levels_t, persistent=False)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels_t[:-1]]), 0)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(math.prod(levels))
        self.eps = eps
        self.proj_in = nn.Linear(dim, len(levels))
        self.proj_out = nn.Linear(len(levels), dim)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """Maps to ``(-(l-1)/2, (l-1)/2)`` per dim, shifted by half a step for even ``l`` so that
        rounding gives exactly ``l`` integer values."""
        half = (self.levels - 1) * (1 - self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes in ``[-(l//2), ...]`` per dim ``(b, t, l)`` -> ids ``(b, t)``."""
        return ((codes + self.levels // 2) * self.basis).sum(-1).long()

    def _indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        return (indices[..., None] // self.basis) % self.levels - self.levels // 2

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> QuantizerOutput:
        """``x (b, t, d)``, ``mask (b, t)`` -> quantized ``(b, t, d)`` and ids ``(b, t)``; loss is 0."""
        z = self._bound(self.proj_in(x).float())
        codes = z + (torch.round(z) - z).detach()  # straight-through rounding
        indices = self._codes_to_indices(torch.round(z).long())
        quantized = self.proj_out(codes / (self.levels // 2)).to(x.dtype)
        return self._output(quantized, indices, mask, x.new_zeros(()))

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids ``(b, t)`` -> the vectors ``(b, t, d)`` the quantizer emits for them."""
        codes = self._indices_to_codes(indices).float()
        return self.proj_out(codes / (self.levels // 2))


class EMAVectorQuantizer(Quantizer):
    """Nearest-neighbour VQ with an EMA codebook, k-means initialisation and dead-code restart.

    Args:
        dim: Width of the vectors to quantize.
        codebook_size: Number of codes.
        codebook_dim: Width of the codebook (vectors are projected down to it and back up).
        decay: EMA decay of the code counts and sums.
        commitment: Weight of ``||x - sg(q)||^2``, the encoder's pull towards its code.
        kmeans_iters: Lloyd iterations on the first training batch (0 = random valid frames).
        dead_code_steps: A code no valid frame has picked for this many training steps is restarted
            from a random valid frame of the current batch (``None`` = never). Counted in steps rather
            than by an EMA-count threshold because small batches give every code an expected count below
            one per step, which no fixed count threshold separates from a dead code.
        eps: Laplace smoothing of the counts.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 4096,
        codebook_dim: int = 64,
        decay: float = 0.99,
        commitment: float = 0.25,
        kmeans_iters: int = 10,
        dead_code_steps: int | None = 50,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.codebook_size, self.decay, self.commitment = codebook_size, decay, commitment
        self.kmeans_iters, self.dead_code_steps, self.eps = kmeans_iters, dead_code_steps, eps
        self.proj_in = nn.Linear(dim, codebook_dim)
        self.proj_out = nn.Linear(codebook_dim, dim)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("codebook", torch.randn(codebook_size, codebook_dim))
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("idle_steps", torch.zeros(codebook_size, dtype=torch.long))  # since last picked
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # total codes restarted

    def _sample(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` random rows of ``flat`` (with replacement when it has fewer), the same on all ranks."""
        idx = torch.randint(0, flat.shape[0], (n,), device=flat.device)
        if flat.shape[0] >= n:
            idx = torch.randperm(flat.shape[0], device=flat.device)[:n]
        return _broadcast(flat[idx].clone())

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Lloyd's k-means from random frames; empty clusters keep their previous centre."""
        centres = self._sample(flat, self.codebook_size)
        centres = centres + KMEANS_JITTER * flat.std() * torch.randn_like(centres)
        self.codebook.copy_(lloyd_kmeans(flat, centres, self.kmeans_iters))
        mean_count = flat.shape[0] / self.codebook_size
        self.cluster_size.fill_(mean_count)
        self.embed_sum.copy_(self.codebook * mean_count)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, ids: torch.Tensor) -> None:
        counts = _all_reduce(torch.bincount(ids, minlength=self.codebook_size).float())
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        sums = _all_reduce(torch.zeros_like(self.codebook).index_add_(0, ids, flat))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        if self.dead_code_steps is None:
            return
        dead = self.idle_steps >= self.dead_code_steps
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        mean_count = self.cluster_size.sum() / self.codebook_size
        self.codebook[dead] = self._sample(flat, n_dead)
        self.cluster_size[dead] = mean_count
        self.embed_sum[dead] = self.codebook[dead] * mean_count
        self.idle_steps[dead] = 0
        self.restarts.add_(n_dead)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> QuantizerOutput:
        """``x (b, t, d)``, ``mask (b, t)`` -> quantized ``(b, t, d)``, ids ``(b, t)``, commitment loss.

        In training mode the codebook is updated from the valid frames only (k-means on the first batch,
        then EMA, then dead-code restart); in eval mode it is read-only.
        """
        z = self.proj_in(x).float()
        flat = z[mask].detach()  # (n, c) valid frames only
        if self.training and flat.shape[0] > 0 and not bool(self.initialized):
            self._kmeans_init(flat)
        ids = torch.zeros(mask.shape, dtype=torch.long, device=x.device)
        ids[mask] = nearest_code(flat, self.codebook)
        q = F.embedding(ids, self.codebook.clone())  # the codes chosen now, before this step's update
        if self.training and flat.shape[0] > 0:
            self._ema_update(flat, ids[mask])
            self._restart_dead(flat)
        n_valid = mask.sum().clamp(min=1) * z.shape[-1]
        loss = self.commitment * ((z - q.detach()).pow(2) * mask[..., None]).sum() / n_valid
        quantized = self.proj_out(z + (q - z).detach()).to(x.dtype)  # straight-through
        return self._output(quantized, ids, mask, loss)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids ``(b, t)`` -> the vectors ``(b, t, d)`` the quantizer emits for them."""
        return self.proj_out(F.embedding(indices, self.codebook))


class ResidualVectorQuantizer(Quantizer):
    """``codebooks`` EMA vector quantizers in a chain: the first quantizes ``x``, each next one what is left
    (``x`` minus the codes chosen so far). The output is the sum of the chosen codes, a token's id
    ``c_0 + C c_1 + ...`` (``speech.modules.codes.join_codes``), the loss the sum of the commitments.

    Args:
        dim: Width of the vectors to quantize.
        codebooks: Quantizers in the chain, ``q``.
        codebook_size: Codes of each, ``C``: ``C ** q`` token ids.
        **settings: The rest of ``EMAVectorQuantizer``'s arguments, the same for each.
    """

    def __init__(self, dim: int, codebooks: int = 2, codebook_size: int = 512, **settings) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            EMAVectorQuantizer(dim, codebook_size, **settings) for _ in range(codebooks)
        )
        self.code_size, self.codebooks = codebook_size, codebooks
        self.codebook_size = codebook_size**codebooks

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> QuantizerOutput:
        """``x (b, t, d)``, ``mask (b, t)`` -> quantized ``(b, t, d)``, ids ``(b, t)``; usage and perplexity
        are the stages' means."""
        residual, quantized, outs = x, torch.zeros_like(x), []
        for stage in self.stages:
            out = stage(residual, mask)
            outs.append(out)
            quantized = quantized + out.quantized  # each straight-through to its own input
            residual = residual - out.quantized.detach()
        ids = join_codes(torch.stack([out.indices for out in outs], -1), self.code_size)
        usage, perplexity = torch.stack([torch.stack((out.usage, out.perplexity)) for out in outs]).mean(0)
        return QuantizerOutput(
            quantized.masked_fill(~mask[..., None], 0.0), ids.masked_fill(~mask, 0),
            sum(out.loss for out in outs), usage, perplexity,
        )  # fmt: skip

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids ``(b, t)`` -> the sum of their codes' vectors ``(b, t, d)``."""
        codes = split_codes(indices, self.code_size, self.codebooks)
        return sum(stage.embed(codes[..., j]) for j, stage in enumerate(self.stages))


QUANTIZERS = {"fsq": FSQ, "vq": EMAVectorQuantizer}


def build_quantizer(kind: str, dim: int, codebooks: int = 1, **settings: dict) -> Quantizer:
    """The quantizer named ``kind`` (``"fsq"`` or ``"vq"``), built with ``settings[kind]``; with
    ``codebooks > 1`` (``vq`` only) a ``ResidualVectorQuantizer`` of that many.

    Lets a config hold the settings of both and switch with one key (``model.quantizer.kind=vq``).
    """
    if kind not in QUANTIZERS:
        raise ValueError(f"unknown quantizer kind {kind!r}: choose one of {sorted(QUANTIZERS)}")
    chosen = dict(settings.get(kind) or {})
    if codebooks == 1:
        return QUANTIZERS[kind](dim, **chosen)
    if kind != "vq" or codebooks < 1:
        raise ValueError(f"codebooks={codebooks} needs kind=vq and a count of at least 1 (got kind={kind!r})")
    return ResidualVectorQuantizer(dim, codebooks, **chosen)
