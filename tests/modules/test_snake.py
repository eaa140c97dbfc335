"""Snake activation: the in-place path used without autograd matches the differentiable one."""

import torch

from speech.modules.dac import Snake1d


def test_inference_path_matches_the_autograd_path_and_keeps_its_input():
    torch.manual_seed(0)
    snake = Snake1d(3)
    with torch.no_grad():
        snake.alpha.uniform_(0.2, 2.0)
    x = torch.randn(2, 3, 50, requires_grad=True)
    expected = snake(x)
    expected.sum().backward()  # the autograd path stays differentiable
    assert x.grad is not None and snake.alpha.grad is not None
    with torch.inference_mode():
        plain = x.detach().clone()
        got = snake(plain)
        assert torch.equal(plain, x.detach())  # the input is not overwritten
    assert torch.allclose(got, expected.detach(), atol=1e-6)
    assert torch.equal(snake(torch.zeros(1, 3, 4)), torch.zeros(1, 3, 4))  # zero padding stays zero
