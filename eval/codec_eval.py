"""Codec reconstruction metrics (mel, multi-resolution STFT, STOI, PESQ, speaker SIM) over two folders.

python eval/codec_eval.py ref_dir=data/originals est_dir=logs/flow_vae/resynth out_dir=logs/eval/vae
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from speech.metrics.codec_eval import codec_markdown, evaluate_codec, write_codec_outputs


@hydra.main(config_path="../configs", config_name="entry/codec_eval", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    embedder = instantiate(cfg.speaker) if cfg.get("speaker") else None
    records, summary = evaluate_codec(
        cfg.ref_dir, cfg.est_dir, sample_rate=cfg.sample_rate, embedder=embedder, progress=cfg.progress
    )
    write_codec_outputs(records, summary, cfg.out_dir)
    print(codec_markdown(summary))
    return summary


if __name__ == "__main__":
    main()
