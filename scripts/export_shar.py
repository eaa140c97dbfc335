"""Export a prepared corpus and its feature caches as Lhotse Shar shards (the data a cluster trains from).

python scripts/export_shar.py [data=...] [out=...] features.tokens=<tokenizer checkpoint> \
    features.latents=<flow-vae checkpoint>

Writes ``<out>/{train,val}/`` shards (cuts, flac audio, one field per feature) and ``<out>/bpe.json``;
``python train.py experiment=... data.datamodule.shar_dir=<out>`` trains from them with the same batches.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from speech.data.shar import export_shar
from speech.lit.resolvers import feature_cache


@hydra.main(config_path="../configs", config_name="entry/export_shar", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    features = {
        kind: feature_cache(kind, ckpt, cfg.paths.cache_dir) for kind, ckpt in cfg.features.items() if ckpt
    }
    files = export_shar(cfg.data.prepared_dir, cfg.out, cfg.shard_size, features)
    summary = {"out": str(cfg.out), "files": len(files), "features": features}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
