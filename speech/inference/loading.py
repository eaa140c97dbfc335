"""Building the inference pipeline from checkpoint files alone (each carries its resolved config).

- AR checkpoint: ``ARTransformer`` (with its speaker encoder) and the text BPE (``ckpt[TEXT_BPE_KEY]``).
- Flow-matching checkpoint: ``FlowMatching`` (with its own speaker encoder); EMA weights when present.
- Audio tokenizer and Flow-VAE checkpoints: by default ``cfg.upstream.tokenizer`` of the AR checkpoint and
  ``cfg.upstream.flow_vae`` of the flow-matching checkpoint (each falls back to the other's config).
- The mel front end: ``cfg.data.mel`` of the AR checkpoint (without one, as for the ceiling rows: of the
  flow-matching checkpoint); the others must agree with it.
- Emotion adapters: checkpoints of the ``ar_adapter`` stage trained on this very AR checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from speech.checkpoints import (
    TEXT_BPE_KEY,
    build_component,
    build_model,
    file_sha256,
    load_adapter,
    load_checkpoint,
)
from speech.modules.lora import LoRAAdapter
from speech.text.bpe import TextBPE


def text_bpe_of(ckpt: dict, path: str | Path) -> TextBPE:
    """The text BPE the AR module stored in its checkpoint.

    Raises:
        ValueError: the checkpoint holds no ``TEXT_BPE_KEY`` (not an AR checkpoint).
    """
    if TEXT_BPE_KEY not in ckpt:
        raise ValueError(
            f"{path} holds no '{TEXT_BPE_KEY}': is it an AR checkpoint (speech.lit.ar.ARModule)?"
        )
    return TextBPE.from_str(ckpt[TEXT_BPE_KEY])


def upstream_path(name: str, given: str | Path | None, *configs: DictConfig) -> Path:
    """An upstream checkpoint: ``given``, else ``cfg.upstream.<name>`` of the first config that has it.

    Raises:
        ValueError: no path given and none stored.
        FileNotFoundError: the path does not exist.
    """
    path = given
    for cfg in configs:
        path = path or OmegaConf.select(cfg, f"upstream.{name}")
    if not path:
        raise ValueError(
            f"no {name} checkpoint: the checkpoints' configs have no upstream.{name}; {_how(name)}"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} checkpoint {path} not found (the config's upstream.{name} unless given); {_how(name)}"
        )
    return path


def _how(name: str) -> str:
    return f"pass its path: Synthesizer.from_checkpoints(..., {name}=...) or infer.py {name}_ckpt=..."


def _mel_config(cfg: DictConfig, what: str) -> dict:
    node = OmegaConf.select(cfg, "data.mel")
    if node is None:
        raise KeyError(f"the {what} checkpoint's config has no data.mel")
    return OmegaConf.to_container(node, resolve=True)


def check_same_mel(configs: dict[str, DictConfig]) -> None:
    """Every model must read the same log-mel (same settings in each ``cfg.data.mel``).

    Raises:
        ValueError: two checkpoints disagree; the message names them and shows both settings.
    """
    (first, cfg), *rest = configs.items()
    reference = _mel_config(cfg, first)
    for name, other in rest:
        mel = _mel_config(other, name)
        if mel != reference:
            raise ValueError(
                f"the {name} checkpoint was trained on other mel settings than the {first} "
                f"checkpoint: {mel} vs {reference}"
            )


def load_pipeline(
    ar: str | Path,
    flow_matching: str | Path,
    tokenizer: str | Path | None = None,
    flow_vae: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
) -> dict:
    """The keyword arguments of ``Synthesizer`` built from checkpoint files.

    Args:
        ar, flow_matching: The AR and flow-matching checkpoints (written by train.py).
        tokenizer, flow_vae: Upstream checkpoints; ``None`` takes them from the stored configs.
        device: Where the models run.
        use_ema: Load the EMA weights of a checkpoint when it has them.

    Raises:
        ValueError: the checkpoints do not fit together (codebook size, latent size, mel settings).
    """
    ar_model, ar_cfg = build_model(ar, use_ema=use_ema)
    bpe = text_bpe_of(load_checkpoint(ar), ar)
    after = load_after_ar(flow_matching, tokenizer, flow_vae, device=device, use_ema=use_ema, ar_cfg=ar_cfg)
    _check_ar_sizes(ar_model, after["audio_tokenizer"], bpe)
    fm_seconds = after.pop("max_reference_seconds")
    ar_seconds = OmegaConf.select(ar_cfg, "data.datamodule.max_ref_duration")
    ar_model = ar_model.to(device).eval()
    return {"ar": ar_model, **after, "bpe": bpe, "max_reference_seconds": (ar_seconds, fm_seconds)}


def load_after_ar(
    flow_matching: str | Path,
    tokenizer: str | Path | None = None,
    flow_vae: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    ar_cfg: DictConfig | None = None,
) -> dict:
    """The stages after the AR model, from checkpoint files: what the ceiling rows render through
    (``speech.inference.ceiling``) and ``load_pipeline`` builds on.

    Args:
        flow_matching: The flow-matching checkpoint.
        tokenizer, flow_vae: Upstream checkpoints; ``None`` takes them from the stored configs (the AR
            model's first for the tokenizer, flow matching's first for the Flow-VAE).
        device: Where the models run.
        use_ema: Load the EMA weights of a checkpoint when it has them.
        ar_cfg: The AR checkpoint's config, when there is one: its mel settings are the reference.

    Returns:
        ``flow_matching``, ``audio_tokenizer``, ``flow_vae``, ``mel`` (modules in eval mode on ``device``)
        and ``max_reference_seconds`` (flow matching's speaker-reference crop, ``None``: whole).

    Raises:
        ValueError: the checkpoints do not fit together (codebook size, latent size, mel settings).
    """
    fm_model, fm_cfg = build_model(flow_matching, use_ema=use_ema)
    ar_cfgs = () if ar_cfg is None else (ar_cfg,)
    tok_path = upstream_path("tokenizer", tokenizer, *ar_cfgs, fm_cfg)
    vae_path = upstream_path("flow_vae", flow_vae, fm_cfg, *ar_cfgs)
    tok_model, tok_cfg = build_model(tok_path, use_ema=use_ema)
    vae_model, vae_cfg = build_model(vae_path, use_ema=use_ema)
    configs = {"AR": ar_cfg} if ar_cfg is not None else {}
    configs.update({"flow-matching": fm_cfg, "tokenizer": tok_cfg, "Flow-VAE": vae_cfg})
    check_same_mel(configs)
    _check_sizes(fm_model, tok_model, vae_model)
    models = {
        "flow_matching": fm_model,
        "audio_tokenizer": tok_model,
        "flow_vae": vae_model,
        "mel": build_component(fm_cfg if ar_cfg is None else ar_cfg, "data.mel"),
    }
    models = {name: module.to(device).eval() for name, module in models.items()}
    return {**models, "max_reference_seconds": OmegaConf.select(fm_cfg, "data.datamodule.max_ref_duration")}


def _check_sizes(fm, audio_tokenizer, flow_vae) -> None:
    _check_pairs(
        [
            ("flow-matching token_vocab_size", fm.token_vocab_size, "tokenizer codebook_size",
             audio_tokenizer.codebook_size),
            ("flow-matching token codebooks", fm.upsampler.embed.codebooks, "tokenizer codebooks",
             audio_tokenizer.codebooks),
            ("flow-matching latent_dim", fm.latent_dim, "Flow-VAE latent_dim", flow_vae.latent_dim),
        ]
    )  # fmt: skip


def _check_ar_sizes(ar, audio_tokenizer, bpe: TextBPE) -> None:
    _check_pairs(
        [
            ("AR audio_vocab_size", ar.audio_vocab_size, "tokenizer codebook_size",
             audio_tokenizer.codebook_size),
            ("AR audio codebooks", ar.audio_emb.codebooks, "tokenizer codebooks", audio_tokenizer.codebooks),
        ]
    )  # fmt: skip
    if bpe.vocab_size > ar.text_emb.num_embeddings:
        raise ValueError(
            f"the text BPE has {bpe.vocab_size} ids but the AR model embeds only {ar.text_emb.num_embeddings}"
        )


def _check_pairs(checks: list[tuple[str, int, str, int]]) -> None:
    """Each ``(name, value, other, expected)``: ``value`` must equal ``expected``."""
    for name, value, other, expected in checks:
        if int(value) != int(expected):
            raise ValueError(
                f"checkpoints do not fit together: {name} is {value} but the {other} is {expected}"
            )


def load_adapters(paths: Sequence[str | Path], ar: str | Path) -> list[LoRAAdapter]:
    """The emotion adapters in ``paths``, each checked to be trained on the AR checkpoint ``ar``.

    Raises:
        FileNotFoundError: an adapter file does not exist.
        ValueError: a file holds no adapter, or its base is another AR checkpoint (by SHA-256).
    """
    adapters = [load_adapter(path) for path in paths]
    ar_sha = file_sha256(ar) if adapters else ""
    for path, adapter in zip(paths, adapters, strict=True):
        if adapter.base_sha256 != ar_sha:
            raise ValueError(
                f"emotion adapter {path} ({adapter.name!r}) was trained on another AR checkpoint "
                f"(sha256 {adapter.base_sha256[:12]}) than {ar} ({ar_sha[:12]}); train it again on this one"
            )
    return adapters
