"""Score generated speech with the Seed-TTS-eval protocol: WER (pluggable ASR) and SIM (pluggable embedder).

    python eval/seedtts_eval.py meta=path/to/meta.lst gen_dir=path/to/wavs language=en \
        asr=pocketsphinx speaker=resemblyzer out_dir=logs/eval/run1
    python eval/seedtts_eval.py meta=seedtts/zh/meta.lst gen_dir=out/zh language=zh \
        asr=paraformer asr.model_dir=ckpt/paraformer-zh speaker=wavlm_ecapa \
        speaker.wavlm_dir=ckpt/wavlm-large speaker.checkpoint=ckpt/wavlm_large_finetune.pth

Writes ``utterances.jsonl``, ``summary.json`` and ``summary.md`` under ``out_dir`` and prints the table.
"""

from __future__ import annotations

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from speech.metrics.seedtts import evaluate_seedtts, summary_markdown, write_outputs

log = logging.getLogger("seedtts_eval")


@hydra.main(config_path="../configs", config_name="entry/seedtts_eval", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    asr = instantiate(cfg.asr)
    speaker = instantiate(cfg.speaker)
    result = evaluate_seedtts(
        cfg.meta,
        cfg.gen_dir,
        asr=asr,
        embedder=speaker,
        language=cfg.language,
        batch_size=cfg.batch_size,
        ground_truth=cfg.ground_truth,
        n_resamples=cfg.bootstrap.n_resamples,
        seed=cfg.bootstrap.seed,
        progress=cfg.progress,
    )
    paths = write_outputs(result, cfg.out_dir)
    print(summary_markdown(result.summary))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return result.summary


if __name__ == "__main__":
    main()
