"""Seed-TTS-eval's SIM model: fine-tuned WavLM-Large + ECAPA-TDNN, loaded from local files only.

The protocol (``cal_sim.sh`` -> UniSpeech ``verification.py``) builds ``ECAPA_TDNN_SMALL(feat_dim=1024,
feat_type='wavlm_large')``, whose upstream is s3prl's WavLM-Large, and loads ``wavlm_large_finetune.pth``
with ``load_state_dict(state_dict['model'], strict=False)``. That file holds both the ECAPA head and the
fine-tuned WavLM, the latter under s3prl names (``feature_extract.model.*``). Here the WavLM is a Hugging
Face ``WavLMModel`` built from a local folder, its weights are then *replaced* by the checkpoint's
fine-tuned ones through an explicit s3prl -> HF name map, and the head is ``speech.models.ecapa_tdnn``.
Unlike the protocol, any missing, unexpected or mis-shaped key raises (see seed-tts-eval issue #24).

Features follow s3prl's hooks exactly: the hidden states are the input of each transformer layer plus the
encoder's final (layer-normed) output, i.e. ``num_hidden_layers + 1`` of them. HF's own
``output_hidden_states`` is not used: in transformers 5 its last entry is the un-normed last layer output.
The waveform is layer-normed first when the WavLM expects normalized input (WavLM-Large does).

Legend: l hidden-state layers, b batch, t frames, d WavLM hidden size, e embedding dim.
"""

from __future__ import annotations

import json
import pickle
import re
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from speech.metrics.speaker.base import SpeakerEmbedder
from speech.models.ecapa_tdnn import ECAPATDNN

S3PRL_PREFIX = "feature_extract.model."

# s3prl WavLM name (after S3PRL_PREFIX) -> HF WavLMModel name; full matches only.
_CONV, _HF_CONV = r"feature_extractor\.conv_layers\.(\d+)\.", r"feature_extractor.conv_layers.\1."
_LAYER, _HF_LAYER = r"encoder\.layers\.(\d+)\.", r"encoder.layers.\1."
_WB = r"(weight|bias)"
_S3PRL_TO_HF = [
    (_CONV + r"0\." + _WB, _HF_CONV + r"conv.\2"),
    # extractor_mode="layer_norm" (WavLM-Large): Sequential(TransposeLast, LayerNorm, TransposeLast) at 2.
    (_CONV + r"2\.1\." + _WB, _HF_CONV + r"layer_norm.\2"),
    # extractor_mode="default" (Base models): a GroupNorm at index 2 of the first block only.
    (r"feature_extractor\.conv_layers\.0\.2\." + _WB, r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"layer_norm\." + _WB, r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\." + _WB, r"feature_projection.projection.\1"),
    (r"mask_emb", r"masked_spec_embed"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    # Legacy torch weight norm (what s3prl used): magnitude weight_g, direction weight_v.
    (r"encoder\.pos_conv\.0\.weight_(g|v)", r"encoder.pos_conv_embed.conv.weight_\1"),
    (r"encoder\.layer_norm\." + _WB, r"encoder.layer_norm.\1"),
    (_LAYER + r"self_attn\.(q|k|v|out)_proj\." + _WB, _HF_LAYER + r"attention.\2_proj.\3"),
    (_LAYER + r"self_attn\.grep_linear\." + _WB, _HF_LAYER + r"attention.gru_rel_pos_linear.\2"),
    (_LAYER + r"self_attn\.grep_a", _HF_LAYER + r"attention.gru_rel_pos_const"),
    (_LAYER + r"self_attn\.relative_attention_bias\.weight", _HF_LAYER + r"attention.rel_attn_embed.weight"),
    (_LAYER + r"self_attn_layer_norm\." + _WB, _HF_LAYER + r"layer_norm.\2"),
    (_LAYER + r"fc1\." + _WB, _HF_LAYER + r"feed_forward.intermediate_dense.\2"),
    (_LAYER + r"fc2\." + _WB, _HF_LAYER + r"feed_forward.output_dense.\2"),
    (_LAYER + r"final_layer_norm\." + _WB, _HF_LAYER + r"final_layer_norm.\2"),
]

_WEIGHT_NORM_PARAMETRIZED = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}

# s3prl WavLM variants HF's WavLMModel cannot represent; named in the error when such keys appear.
_UNMAPPABLE = [
    (_LAYER + r"fc1\.linear\..*", "GLU feed-forward (activation_fn='glu'); HF WavLM has none"),
    (_LAYER + r"self_attn\.bias_[kv]", "add_bias_kv attention; HF WavLM has none"),
    (_CONV + _WB, "conv2d/custom conv_type extractor; HF has conv1d only"),
]


def s3prl_to_hf_name(name: str, hf_keys: set[str]) -> str | None:
    """Maps one s3prl WavLM parameter name (without ``S3PRL_PREFIX``) to its HF name; ``None`` if no rule.

    ``hf_keys`` (the target model's state-dict keys) decides how the weight-norm pair is named: torch's
    parametrization (``parametrizations.weight.original0/1``, current HF) or the legacy ``weight_g/v``.
    """
    for pattern, target in _S3PRL_TO_HF:
        if re.fullmatch(pattern, name):
            hf = re.sub(pattern, target, name)
            head, _, leaf = hf.rpartition(".")
            if leaf in _WEIGHT_NORM_PARAMETRIZED and f"{head}.{_WEIGHT_NORM_PARAMETRIZED[leaf]}" in hf_keys:
                hf = f"{head}.{_WEIGHT_NORM_PARAMETRIZED[leaf]}"
            return hf
    return None


def _why_unmappable(name: str) -> str:
    for pattern, reason in _UNMAPPABLE:
        if re.fullmatch(pattern, name):
            return reason
    return "no s3prl -> HF rule"


def _mismatches(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> list[str]:
    """Problems between a module's state dict and the tensors offered for it, one line each."""
    problems = [f"missing: {k}" for k in sorted(expected.keys() - given.keys())]
    problems += [f"unexpected: {k}" for k in sorted(given.keys() - expected.keys())]
    problems += [
        f"shape: {k} is {tuple(given[k].shape)} in the checkpoint, {tuple(expected[k].shape)} in the model"
        for k in sorted(expected.keys() & given.keys())
        if tuple(expected[k].shape) != tuple(given[k].shape)
    ]
    return problems


def map_wavlm_state(
    state: dict[str, torch.Tensor], hf_keys: set[str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renames the checkpoint's ``feature_extract.model.*`` tensors to HF ``WavLMModel`` names.

    Returns:
        ``(mapped, problems)``: the renamed tensors, and one line per key that could not be mapped.
    """
    mapped, problems = {}, []
    for key, value in state.items():
        name = key[len(S3PRL_PREFIX) :]
        target = s3prl_to_hf_name(name, hf_keys)
        if target is None:
            problems.append(f"unmappable: {key} ({_why_unmappable(name)})")
        else:
            mapped[target] = value
    return mapped, problems


def _head_kwargs(head: dict[str, torch.Tensor], feat_dim: int, num_hidden_states: int) -> dict:
    """ECAPA sizes read off the checkpoint (absent keys keep the defaults; the key check reports them)."""
    kwargs: dict = {"feat_dim": feat_dim, "num_hidden_states": num_hidden_states}
    out_channels = {  # argument -> the tensor whose first dimension it is
        "channels": "layer1.conv.weight",
        "pooled_channels": "conv.weight",
        "emb_dim": "linear.weight",
        "attention_channels": "pooling.linear1.weight",
        "se_bottleneck": "layer2.SE_Connect.linear1.weight",
    }
    for arg, key in out_channels.items():
        if key in head:
            kwargs[arg] = head[key].shape[0]
    width = head.get("layer2.Res2Conv1dReluBn.convs.0.weight")
    if width is not None and "channels" in kwargs:
        kwargs["res2_scale"] = kwargs["channels"] // width.shape[0]
    if "pooling.linear1.weight" in head and "pooled_channels" in kwargs:
        kwargs["global_context"] = head["pooling.linear1.weight"].shape[1] == 3 * kwargs["pooled_channels"]
    return kwargs


def _read_checkpoint(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a UniSpeech SV checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: speaker-verification checkpoint not found; expected Seed-TTS-eval's "
            "wavlm_large_finetune.pth (a torch file whose 'model' entry is the ECAPA_TDNN state dict)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: holds objects other than tensors and plain containers ({err}). If you trust the file, "
            "pass allow_pickle=True, or re-save only torch.load(path)['model']."
        ) from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected a dict with a 'model' state dict, found {found}")
    return ckpt["model"]


def _load_wavlm(wavlm_dir: Path):
    """A local HF WavLMModel (no downloads) and whether its input is layer-normed first."""
    if not (wavlm_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{wavlm_dir}: no WavLM folder here; it should be a Hugging Face WavLM-Large export (config.json "
            "plus model.safetensors or pytorch_model.bin, e.g. a local copy of microsoft/wavlm-large)"
        )
    from transformers import WavLMModel  # heavy import, only when this backend is used

    wavlm = WavLMModel.from_pretrained(str(wavlm_dir), local_files_only=True)
    if wavlm.config.add_adapter:
        raise ValueError(f"{wavlm_dir}: WavLM with an adapter is not the s3prl layout the checkpoint expects")
    # s3prl normalizes when the checkpoint's cfg.normalize is set; HF records it as the feature extractor's
    # do_normalize. Without that file, use fairseq's pairing: layer-norm extractors take normalized input.
    normalize = wavlm.config.feat_extract_norm == "layer"
    pre = wavlm_dir / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text()).get("do_normalize", normalize))
    return wavlm, normalize


def _grab_input(store: list, module, args, kwargs) -> None:
    """Forward pre-hook: records a transformer layer's input hidden states, as s3prl's hooks do."""
    store.append(args[0] if args else kwargs["hidden_states"])


class WavLMECAPAEmbedder(SpeakerEmbedder):
    """Speaker embeddings from the Seed-TTS-eval SIM model (full-length audio, no trimming).

    Args:
        wavlm_dir: Local Hugging Face WavLM-Large folder (its config defines the upstream; every weight is
            then replaced by the checkpoint's fine-tuned WavLM).
        checkpoint: ``wavlm_large_finetune.pth``; its ``['model']`` holds the ECAPA head and the s3prl-named
            fine-tuned WavLM.
        device: Torch device to run on.
        allow_pickle: Unpickle arbitrary objects in the checkpoint (``torch.load(weights_only=False)``); only
            for files you trust.

    Raises:
        FileNotFoundError: ``wavlm_dir`` or ``checkpoint`` is missing.
        ValueError: the checkpoint has missing, unexpected, unmappable or mis-shaped keys (all are listed).
    """

    name = "wavlm_ecapa"

    def __init__(
        self, wavlm_dir: str, checkpoint: str, device: str = "cpu", *, allow_pickle: bool = False
    ) -> None:
        self.device = torch.device(device)
        self.wavlm, self.normalize = _load_wavlm(Path(wavlm_dir))
        state = _read_checkpoint(Path(checkpoint), allow_pickle)
        hf_state = self.wavlm.state_dict()
        upstream = {k: v for k, v in state.items() if k.startswith(S3PRL_PREFIX)}
        head = {k: v for k, v in state.items() if not k.startswith(S3PRL_PREFIX)}
        mapped, problems = map_wavlm_state(upstream, set(hf_state))
        problems = [f"WavLM {p}" for p in problems + _mismatches(hf_state, mapped)]

        num_states = self.wavlm.config.num_hidden_layers + 1
        self.head = ECAPATDNN(**_head_kwargs(head, self.wavlm.config.hidden_size, num_states))
        head_problems = _mismatches(self.head.state_dict(), head)
        if "feature_weight" in head and head["feature_weight"].shape[0] != num_states:
            head_problems.append(
                f"the checkpoint weights {head['feature_weight'].shape[0]} hidden states but the WavLM in "
                f"{wavlm_dir} yields {num_states} (num_hidden_layers + 1): is it the right WavLM size?"
            )
        problems += [f"ECAPA {p}" for p in head_problems]
        if problems:
            listing = "\n  ".join(problems)
            raise ValueError(f"{checkpoint}: does not match the WavLM-ECAPA layout:\n  {listing}")
        self.wavlm.load_state_dict(mapped, strict=True)
        self.head.load_state_dict(head, strict=True)
        self.wavlm.to(self.device).eval()
        self.head.to(self.device).eval()

    def hidden_states(self, wav: torch.Tensor) -> torch.Tensor:
        """s3prl-style hidden states of unpadded rows: ``(b, t_samples)`` 16 kHz audio -> ``(l, b, t, d)``."""
        if self.normalize:
            wav = F.layer_norm(wav, wav.shape[-1:])
        inputs: list[torch.Tensor] = []
        handles = [
            layer.register_forward_pre_hook(partial(_grab_input, inputs), with_kwargs=True)
            for layer in self.wavlm.encoder.layers
        ]
        try:
            out = self.wavlm(wav)
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack([*inputs, out.last_hidden_state])

    @torch.inference_mode()
    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embeds a float waveform ``(t,)`` at 16 kHz; returns ``(e,)`` float32 (256 for the protocol's)."""
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32).reshape(-1), device=self.device)
        frames = int(self.wavlm._get_feat_extract_output_lengths(torch.tensor(x.shape[0])))
        if frames < 1:
            raise ValueError(f"audio of {x.shape[0]} samples is too short for WavLM (no output frame)")
        return self.head(self.hidden_states(x[None]))[0].float().cpu().numpy()
