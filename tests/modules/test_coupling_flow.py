"""The Flow-VAE's coupling flow inverts exactly and reports the true log-determinant of its Jacobian."""

import pytest
import torch

from speech.modules.coupling import AffineCoupling, CouplingFlow


def randomized_flow(channels=4, n_flows=3, seed=0):
    """A flow whose couplings are not the identity (their zero-initialized output layers are redrawn)."""
    torch.manual_seed(seed)
    flow = CouplingFlow(channels, n_flows=n_flows, hidden=8, kernel_size=3, layers=1).double()
    for layer in flow.flows:
        if isinstance(layer, AffineCoupling):
            torch.nn.init.normal_(layer.net.post.weight, std=0.5)
            torch.nn.init.normal_(layer.net.post.bias, std=0.5)
    return flow


def test_inverse_reproduces_input_and_padding_passes_through():
    flow = randomized_flow(n_flows=2)  # an even number of channel flips restores the channel order
    z = torch.randn(2, 4, 7, dtype=torch.double)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    y, logdet = flow(z, mask)
    assert not torch.allclose(y, z)  # the flow does something...
    assert torch.allclose(flow.inverse(y, mask), z, atol=1e-10)  # ...and undoes it
    assert torch.equal(y[1, :, 4:], z[1, :, 4:])  # padded frames pass through
    assert logdet.shape == (2,)


def test_logdet_equals_autograd_jacobian():
    flow = randomized_flow()
    z = torch.randn(1, 4, 5, dtype=torch.double)
    mask = torch.ones(1, 5, dtype=torch.bool)
    _, logdet = flow(z, mask)
    jac = torch.autograd.functional.jacobian(lambda x: flow(x.view(1, 4, 5), mask)[0].flatten(), z.flatten())
    sign, expected = torch.linalg.slogdet(jac)
    assert sign.item() > 0
    assert torch.allclose(logdet[0], expected, atol=1e-8), (logdet.item(), expected.item())


def test_logdet_counts_only_valid_frames():
    flow = randomized_flow()
    z = torch.randn(1, 4, 6, dtype=torch.double)
    short = torch.tensor([[True] * 4 + [False] * 2])
    _, ld_padded = flow(z, short)
    _, ld_alone = flow(z[..., :4], torch.ones(1, 4, dtype=torch.bool))
    assert torch.allclose(ld_padded, ld_alone, atol=1e-10)


def test_fresh_flow_is_identity_and_mean_only_is_volume_preserving():
    z = torch.randn(2, 6, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    y, logdet = CouplingFlow(6, n_flows=2)(z, mask)  # even number of flips: channel order restored
    assert torch.equal(y, z) and torch.equal(logdet, torch.zeros(2))
    flow = randomized_flow(n_flows=2).float()
    for layer in flow.flows:
        if isinstance(layer, AffineCoupling):
            layer.mean_only = True
            layer.net.post = torch.nn.Conv1d(8, layer.n_b, 1)
    _, logdet = flow(torch.randn(2, 4, 5), mask)
    assert torch.equal(logdet, torch.zeros(2))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="at least 2 channels"):
        AffineCoupling(1, hidden=4)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        AffineCoupling(4, hidden=4, kernel_size=4)
