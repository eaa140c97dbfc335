"""Residual k-means (the quantization floor of scripts/resynthesize.py): it finds clusters, a second
codebook quantizes what the first left, and sizes it cannot fit are refused."""

import pytest
import torch

from speech.modules.quantizers import fit_residual_kmeans, nearest_code, residual_quantize

pytestmark = pytest.mark.usefixtures("one_thread")


def clusters(n_per: int = 200, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    x = centers.repeat_interleave(n_per, 0) + noise * torch.randn(4 * n_per, 2, generator=g)
    return x, centers


def test_one_codebook_finds_the_clusters():
    x, centers = clusters()
    (book,) = fit_residual_kmeans(x, [4], generator=torch.Generator().manual_seed(1))
    # every center has a centroid next to it, and each point is quantized to its own cluster's
    assert torch.cdist(centers, book).min(1).values.max() < 0.05
    err = (x - residual_quantize(x, [book])).norm(dim=1)
    assert err.max() < 0.3


def test_a_second_codebook_quantizes_what_the_first_left():
    x = torch.randn(3000, 8, generator=torch.Generator().manual_seed(0))
    books = fit_residual_kmeans(x, [16, 16], generator=torch.Generator().manual_seed(0))
    one, two = ((x - residual_quantize(x, books[:n])).pow(2).sum(1).mean() for n in (1, 2))
    assert two < 0.85 * one < 0.85 * x.pow(2).sum(1).mean()
    assert nearest_code(x[:0], books[0]).shape == (0,)


def test_sizes_out_of_range_are_refused():
    x, _ = clusters(n_per=2)
    for bad in (0, 9):
        with pytest.raises(ValueError, match=r"codebook size .* must be in \[1, 8\]"):
            fit_residual_kmeans(x, [bad])
