"""LightningModule of one LoRA adapter on a trained, frozen AR model (stage ``ar_adapter``): an emotion.

MiniMax-Speech section 4.1 trains an independent LoRA module per emotion on emotive data, leaves the base
model unchanged and loads the module a request asks for. Here the base AR Transformer and its speaker
encoder are frozen, :func:`speech.modules.lora.add_lora` wraps the chosen linear layers, and training runs
exactly as in ``ARModule`` (zero-shot and one-shot rows) on the cuts of one emotion. The datamodule picks
those (``emotion``) and gives them references of another emotion, usually neutral (``reference_emotion``):
the paper found emotion-congruent references made the output lean on the reference.

Checkpoints hold only the adapter's ``A`` and ``B`` (and their optimizer state), the text BPE and
``checkpoint["adapter"]``: its name, LoRA settings and the SHA-256 of the base checkpoint. Resuming rebuilds
the base from ``base`` and loads the adapter on top; ``speech.checkpoints.load_adapter`` turns a checkpoint
into the ``LoRAAdapter`` that ``speech.inference.Synthesizer`` applies per request.
"""

from __future__ import annotations

from pathlib import Path

import torch

from speech.audio.mel import LogMelSpectrogram
from speech.checkpoints import ADAPTER_KEY, TEXT_BPE_KEY, file_sha256
from speech.lit.ar import ARModule
from speech.models.ar_transformer import ARTransformer
from speech.modules.lora import LoRAConfig, add_lora


class ARAdapterModule(ARModule):
    """Trains a LoRA adapter named ``adapter`` on the frozen AR model ``model`` loaded from ``base``.

    Args:
        model: The base ``ARTransformer`` with the weights of ``base``
            (``speech.lit.checkpoint.pretrained_model``).
        mel: Feature extractor of the reference audio.
        base: The base AR checkpoint; its SHA-256 goes into every adapter checkpoint.
        adapter: The adapter's name: the emotion its data shows (``happy``, ``sad``...).
        lora: ``LoRAConfig`` or its fields (rank, alpha, dropout, targets).
        prompt_prob, optim: As ``ARModule``.

    Raises:
        ValueError: ``adapter`` is empty, ``base`` is not an AR checkpoint, or the LoRA settings are invalid.
    """

    def __init__(
        self,
        model: ARTransformer,
        mel: LogMelSpectrogram,
        *,
        base: str | Path,
        adapter: str,
        lora: LoRAConfig | dict | None = None,
        **stage,
    ) -> None:
        super().__init__(model, mel, **stage)
        if not isinstance(adapter, str) or not adapter.strip():
            raise ValueError(f"the adapter needs a name (the emotion it renders), got {adapter!r}")
        self.adapter_name = adapter
        self.lora = lora if isinstance(lora, LoRAConfig) else LoRAConfig(**dict(lora or {}))
        self.base, self.base_sha256 = str(base), file_sha256(base)
        base_ckpt = torch.load(base, map_location="cpu", weights_only=False, mmap=True)
        if TEXT_BPE_KEY not in base_ckpt:
            raise ValueError(f"base {base} holds no '{TEXT_BPE_KEY}': it is not an AR checkpoint (stage ar)")
        self.base_bpe = base_ckpt[TEXT_BPE_KEY]  # TextBPE.to_str() of the base
        del base_ckpt
        add_lora(self.model.train(), self.lora)  # train mode: the base's dropout (if any) as in its training
        self.strict_loading = False  # checkpoints hold the adapter only; the base comes from `base`

    def _adapter_keys(self) -> list[str]:
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def on_fit_start(self) -> None:
        bpe = getattr(getattr(self.trainer, "datamodule", None), "bpe", None)
        if bpe is not None and bpe.to_str() != self.base_bpe:
            raise ValueError(
                "the data's text BPE is not the base AR model's: an adapter must read text as the base does. "
                "Prepare the adapter's corpus with the base corpus's BPE (data.bpe.reuse=<base prepared_dir>/"
                "bpe.json, as configs/data/synthetic_emotion_tiny.yaml does)"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        keep = set(self._adapter_keys())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[ADAPTER_KEY] = {
            "name": self.adapter_name,
            "lora": self.lora.to_dict(),
            "base": self.base,
            "base_sha256": self.base_sha256,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(ADAPTER_KEY)
        if meta is None:
            raise ValueError("resuming an adapter run from a checkpoint that holds no adapter")
        if meta["base_sha256"] != self.base_sha256:
            raise ValueError(
                f"this run's adapter was trained on base {meta['base']} (sha256 {meta['base_sha256'][:12]}), "
                f"but base {self.base} is now {self.base_sha256[:12]}: the base changed under the run; start "
                "a new run (another name, or delete its checkpoints)"
            )
        missing = sorted(set(self._adapter_keys()) - set(checkpoint["state_dict"]))
        if missing:
            raise ValueError(f"the checkpoint lacks adapter weights {missing[:4]} ({len(missing)} in all)")
