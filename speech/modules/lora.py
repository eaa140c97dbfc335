"""Low-rank adapters (LoRA) on the linear layers of a trained model.

A linear layer ``y = W x`` (``W (out, in)``) gets a trainable update ``W + (alpha / r) B A`` with
``A (r, in)`` and ``B (out, r)``; ``B`` starts at zero, so an untrained adapter changes nothing.
The base weights stay frozen. MiniMax-Speech trains one such adapter per emotion on the AR model and loads
the one a request asks for (paper section 4.1).

Two forms of the same update:

- training: :func:`add_lora` wraps the chosen layers in :class:`LoRALinear`, which computes
  ``W x + s B (A x)`` and trains only ``A`` and ``B``;
- inference: a :class:`LoRAAdapter` (the trained ``A``, ``B`` of every wrapped layer) is added into the plain
  weights while :meth:`LoRAAdapter.applied` is open and taken out exactly afterwards, so generation runs at
  the speed of the base model and requests of different emotions can take turns on one model.

Layers are chosen by ``fnmatch`` patterns on their module names (``blocks.*.attn.qkv``). A fused projection
such as ``qkv`` gets one adapter (a shared ``A``), which is LoRA on the concatenated output.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase

import torch
from torch import nn

# Every linear layer of the AR model's Transformer blocks (speech.modules.transformer.TransformerBlock).
BLOCK_LINEARS = ("blocks.*.attn.qkv", "blocks.*.attn.out", "blocks.*.ffn.w13", "blocks.*.ffn.w2")


@dataclass(frozen=True)
class LoRAConfig:
    """What an adapter adapts and how big it is.

    Attributes:
        rank: ``r``, the inner size of ``B A``.
        alpha: The update is scaled by ``alpha / rank``.
        dropout: Dropout on the adapter's input while training.
        targets: ``fnmatch`` patterns of the linear layers' module names.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = BLOCK_LINEARS

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str) or not self.targets:
            raise ValueError(f"LoRA targets must be a non-empty list of name patterns, got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update; ``(..., in) -> (..., out)``.

    Args:
        base: The layer to adapt; its parameters are frozen.
        config: Rank, alpha and dropout.
    """

    def __init__(self, base: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = config.scale
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(config.rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, config.rank, device=w.device, dtype=w.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initializes its weight
        self.drop = nn.Dropout(config.dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta(self) -> torch.Tensor:
        """The update ``s B A``, ``(out, in)``."""
        return self.scale * (self.lora_b @ self.lora_a)

    @property
    def weight(self) -> torch.Tensor:
        """The adapted weight ``W + s B A`` (for code that reads ``.weight`` directly:
        ``TransformerBlock.step_weights`` lays it out for decoding a wrapped model)."""
        return self.base.weight + self.delta()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.drop(x) @ self.lora_a.t() @ self.lora_b.t()
        return self.base(x) + self.scale * update


def matching_linears(model: nn.Module, targets: Sequence[str]) -> dict[str, nn.Linear]:
    """The plain ``nn.Linear`` layers of ``model`` whose names match a pattern, by name.

    Raises:
        ValueError: a pattern matches no linear layer (the message lists some that exist).
    """
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    chosen = {name: m for name, m in linears.items() if any(fnmatchcase(name, t) for t in targets)}
    unmatched = [t for t in targets if not any(fnmatchcase(name, t) for name in linears)]
    if unmatched:
        names = sorted(linears)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        raise ValueError(f"LoRA targets {unmatched} match no nn.Linear of the model; its linears: {shown}")
    return chosen


def add_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Freezes ``model`` and wraps the target layers in :class:`LoRALinear` (in place).

    Returns:
        The wrapped layers' names, sorted.

    Raises:
        ValueError: a target matches no linear layer, or the model already has adapters.
    """
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA layers")
    chosen = matching_linears(model, config.targets)
    model.requires_grad_(False)
    for name, linear in chosen.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, LoRALinear(linear, config))
    return sorted(chosen)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's :class:`LoRALinear` layers by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


@dataclass
class LoRAAdapter:
    """A trained adapter, detached from the model it was trained in.

    Attributes:
        name: What it renders (an emotion).
        config: Its rank, alpha and targets.
        weights: Per adapted layer name (as named in the *plain* model): ``(A (r, in), B (out, r))``.
        base_sha256: SHA-256 of the base checkpoint file it was trained on ("" when unknown).
    """

    name: str
    config: LoRAConfig
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    base_sha256: str = ""

    @classmethod
    def from_model(
        cls, name: str, model: nn.Module, config: LoRAConfig, base_sha256: str = ""
    ) -> LoRAAdapter:
        """Takes the current ``A``, ``B`` of a model wrapped by :func:`add_lora`."""
        layers = lora_layers(model)
        if not layers:
            raise ValueError("the model has no LoRA layers: wrap it with add_lora first")
        weights = {n: (m.lora_a.detach().clone(), m.lora_b.detach().clone()) for n, m in layers.items()}
        return cls(name, config, weights, base_sha256)

    def check_fits(self, model: nn.Module) -> None:
        """Raises ``ValueError`` unless every adapted layer is a linear of ``model`` with matching shapes."""
        linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
        for layer, (a, b) in self.weights.items():
            linear = linears.get(layer)
            if linear is None:
                raise ValueError(
                    f"adapter {self.name!r} adapts {layer!r}, which is not a linear layer of the model"
                )
            shape = (linear.out_features, linear.in_features)
            if (b.shape[0], a.shape[1]) != shape or a.shape[0] != b.shape[1]:
                raise ValueError(
                    f"adapter {self.name!r} does not fit layer {layer!r}: A {tuple(a.shape)}, "
                    f"B {tuple(b.shape)} for a weight of shape {shape}"
                )

    def deltas(self, model: nn.Module) -> Iterator[tuple[nn.Linear, torch.Tensor]]:
        """``(layer, s B A)`` for every adapted layer of ``model``, on the layer's device and dtype."""
        for layer, (a, b) in self.weights.items():
            linear = model.get_submodule(layer)
            w = linear.weight
            delta = self.config.scale * (b.to(w.device, torch.float32) @ a.to(w.device, torch.float32))
            yield linear, delta.to(w.dtype)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Adds the adapter into ``model``'s weights (in place) until the block ends.

        The weights are restored from copies, bit for bit. The in-place change bumps the parameters' version
        counters, which is what invalidates caches keyed on them (``TransformerBlock.step_weights``).
        """
        self.check_fits(model)
        saved = []
        try:
            with torch.no_grad():
                for linear, delta in self.deltas(model):
                    saved.append((linear.weight, linear.weight.detach().clone()))
                    linear.weight.add_(delta)
            yield model
        finally:
            with torch.no_grad():
                for weight, original in saved:
                    weight.copy_(original)
