"""OmegaConf resolvers that derive data-dependent sizes and paths at the edge, from what earlier stages
wrote (so configs never hard-code a vocabulary size or a cache folder's hash):

- ``${text_vocab_size:<prepared_dir>}``: size of the text BPE saved by ``scripts/prepare_data.py``.
- ``${codebook_size:<tokenizer checkpoint>}``: number of audio tokens of a trained tokenizer.
- ``${codebooks:<tokenizer checkpoint>}``: residual codes per token of a trained tokenizer (1 or more).
- ``${latent_dim:<flow-vae checkpoint>}``: latent channels of a trained Flow-VAE.
- ``${feature_cache:<kind>,<checkpoint>,<cache_dir>}``: the cache folder that checkpoint's encode run filled.
- ``${mixed_precision:<accelerator>}``: the precision of the GPU trainers (``configs/trainer/gpu.yaml``).
- ``${main_job:<stage>,<root_dir>}``: the checkpoint of a stage the main job trained (``entry/serve.yaml``).

The config stored in a checkpoint is resolved, so these run once, when training starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from speech.checkpoints import checkpoint_config, file_sha256, load_checkpoint
from speech.data.cache import FeatureCache

ENCODE_COMMAND = "scripts/encode.py"  # fills the cache of any kind: kind=tokens | latents | alignments


def text_vocab_size(prepared_dir: str) -> int:
    from speech.text.bpe import TextBPE

    path = Path(prepared_dir) / "bpe.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python scripts/prepare_data.py data=...` first")
    return TextBPE.load(path).vocab_size


def _stored_model_config(ckpt: str) -> DictConfig:
    """The ``model`` config an upstream checkpoint carries (read, not built: its weights are not loaded
    into a model)."""
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"upstream checkpoint {ckpt} not found: train that stage first")
    return checkpoint_config(load_checkpoint(ckpt)).model


def codebook_size(ckpt: str) -> int:
    """Audio tokens of a trained tokenizer: its stored quantizer config, built alone (a few kB) so the
    FSQ/VQ size rule stays in ``speech.modules.quantizers``."""
    return int(instantiate(_stored_model_config(ckpt).quantizer).codebook_size)


def codebooks(ckpt: str) -> int:
    """Residual codes per audio token of a trained tokenizer (1 unless it was trained with
    ``model.quantizer.codebooks``). Read from the stored config, not built: building a quantizer draws from
    the global random generator, and a resolver that did would change every seeded run after it."""
    return int(OmegaConf.select(_stored_model_config(ckpt).quantizer, "codebooks", default=1))


def latent_dim(ckpt: str) -> int:
    """Latent channels of a trained Flow-VAE: its decoder's input channels (``FlowVAE`` checks they match)."""
    return int(_stored_model_config(ckpt).decoder.in_channels)


def feature_cache(kind: str, ckpt: str, cache_dir: str) -> str:
    """The folder of ``FeatureCache.for_checkpoint(cache_dir, kind, ckpt)``, which must already exist."""
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found: it keys the '{kind}' feature cache")
    root = Path(cache_dir) / kind / f"{Path(ckpt).stem}-{file_sha256(ckpt)[:16]}"
    if not (root / "meta.json").is_file():
        raise FileNotFoundError(
            f"no {kind} cache for {ckpt} (expected {root}): run "
            f"`python {ENCODE_COMMAND} kind={kind} ckpt={ckpt}` first"
        )
    FeatureCache(root)  # checks meta.json
    return str(root)


def mixed_precision(accelerator: str) -> str:
    """``"32-true"`` on the CPU, ``"bf16-mixed"`` on anything else: the GPU trainers (``gpu``, ``ddp``,
    ``fsdp``, ``slurm``) run float32 when given ``trainer.accelerator=cpu`` (bf16 autocast on a CPU is slow
    and would change the numbers the CPU runs are compared with)."""
    return "32-true" if accelerator == "cpu" else "bf16-mixed"


# What scripts/run_tiny.py writes when it ends, under the repository root it runs in: {"checkpoints": each
# trained stage's checkpoint (paths relative to that root), "ar_aligned": whether its AR model reads
# text-aligned hints}
MAIN_JOB_CHECKPOINTS = Path("logs/pipeline_tiny/checkpoints.json")


def main_job(stage: str, root_dir: str) -> str:
    """The checkpoint of ``stage`` (``tokenizer``, ``flow_vae``, ``flow_matching`` or ``ar``) that the main
    job run in ``root_dir`` trained: its run folders depend on its budgets and options, so they are read
    from the list it wrote, not assumed.

    Raises:
        FileNotFoundError: the main job has not ended there, or the checkpoint it names is gone.
        KeyError: ``stage`` is not one it lists.
    """
    listed = Path(root_dir) / MAIN_JOB_CHECKPOINTS
    if not listed.is_file():
        raise FileNotFoundError(
            f"{listed} not found: run the main job (bash scripts/run_tiny.sh), or give the checkpoints' paths"
        )
    said = json.loads(listed.read_text())["checkpoints"]
    if stage not in said:
        raise KeyError(f"the main job lists no stage {stage!r}; it lists {list(said)}")
    ckpt = Path(root_dir) / said[stage]
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}, listed in {listed}, not found: run the main job again")
    return str(ckpt)


def register_resolvers() -> None:
    """Registers the resolvers above (idempotent); entry points call it before reading configs."""
    for name, fn in {"text_vocab_size": text_vocab_size, "codebook_size": codebook_size,
                     "codebooks": codebooks, "latent_dim": latent_dim, "feature_cache": feature_cache,
                     "mixed_precision": mixed_precision, "main_job": main_job}.items():  # fmt: skip
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)
