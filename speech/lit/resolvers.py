"""OmegaConf resolvers that derive data-dependent sizes and paths at the edge, from what earlier stages
wrote (so configs never hard-code a vocabulary size or a cache folder's hash):

- ``${text_vocab_size:<prepared_dir>}``: size of the text BPE saved by ``scripts/prepare_data.py``.
- ``${codebook_size:<tokenizer checkpoint>}``: number of audio tokens of a trained tokenizer.
- ``${latent_dim:<flow-vae checkpoint>}``: latent channels of a trained Flow-VAE.
- ``${feature_cache:<kind>,<checkpoint>,<cache_dir>}``: the cache folder that checkpoint's encode run filled.

The config stored in a checkpoint is resolved, so these run once, when training starts.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from speech.checkpoints import file_sha256
from speech.data.cache import FeatureCache

ENCODE_COMMANDS = {"tokens": "scripts/encode_tokens.py", "latents": "scripts/encode_latents.py"}


def text_vocab_size(prepared_dir: str) -> int:
    from speech.text.bpe import TextTokenizer

    path = Path(prepared_dir) / "bpe.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python scripts/prepare_data.py data=...` first")
    return TextTokenizer.load(path).vocab_size


def _model(ckpt: str):
    from speech.checkpoints import build_model

    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"upstream checkpoint {ckpt} not found: train that stage first")
    return build_model(ckpt)[0]


def codebook_size(ckpt: str) -> int:
    return int(_model(ckpt).codebook_size)


def latent_dim(ckpt: str) -> int:
    return int(_model(ckpt).latent_dim)


def feature_cache(kind: str, ckpt: str, cache_dir: str) -> str:
    """The folder of ``FeatureCache.for_checkpoint(cache_dir, kind, ckpt)``, which must already exist."""
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found: it keys the '{kind}' feature cache")
    root = Path(cache_dir) / kind / f"{Path(ckpt).stem}-{file_sha256(ckpt)[:16]}"
    if not (root / "meta.json").is_file():
        raise FileNotFoundError(
            f"no {kind} cache for {ckpt} (expected {root}): run "
            f"`python {ENCODE_COMMANDS.get(kind, 'scripts/encode_tokens.py')} kind={kind} ckpt={ckpt}` first"
        )
    FeatureCache(root)  # checks meta.json
    return str(root)


def register_resolvers() -> None:
    """Registers the resolvers above (idempotent); entry points call it before reading configs."""
    for name, fn in {"text_vocab_size": text_vocab_size, "codebook_size": codebook_size,
                     "latent_dim": latent_dim, "feature_cache": feature_cache}.items():  # fmt: skip
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)
