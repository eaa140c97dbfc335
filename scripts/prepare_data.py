"""Prepare a corpus for training and push it once through the batch pipeline, printing a summary.

python scripts/prepare_data.py                       # the built-in tiny synthetic corpus
python scripts/prepare_data.py data=libritts data.root=/corpora/LibriTTS
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from speech.data.prepare import prepare_corpus
from speech.data.rejects import RejectLog
from speech.data.shar import export_shar
from speech.lit.data_report import check_pipeline, plot_durations

log = logging.getLogger("prepare_data")


@hydra.main(config_path="../configs", config_name="entry/prepare_data", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    data = cfg.data
    rejects = RejectLog()
    utterances = instantiate(data.recipe, rejects=rejects)
    summary = prepare_corpus(
        utterances,
        data.prepared_dir,
        rules=instantiate(data.rules),
        rejects=rejects,
        bpe_vocab_size=data.bpe.vocab_size,
        bpe_min_frequency=data.bpe.min_frequency,
        bpe_reuse=data.bpe.get("reuse"),
        bpe_phonemes=data.bpe.get("phonemes"),
        val_per_speaker=data.validation.per_speaker,
        val_max_total=data.validation.max_total,
        seed=data.validation.seed,
        progress=cfg.progress,
    )
    datamodule = instantiate(data.datamodule)
    summary["pipeline"] = check_pipeline(
        datamodule, instantiate(data.mel), max_batches=cfg.check_batches, progress=cfg.progress
    )
    plot = plot_durations(
        {
            "train": [c.duration for c in datamodule.train_cuts],
            "val": [c.duration for c in datamodule.val_cuts],
        },
        f"{data.prepared_dir}/durations.png",
    )
    if data.shar_dir:
        summary["shar_files"] = len(export_shar(data.prepared_dir, data.shar_dir, data.shar_shard_size))
    summary_json = json.dumps(summary, indent=2, ensure_ascii=False)
    (Path(data.prepared_dir) / "summary.json").write_text(summary_json)  # now with the pipeline check
    print(summary_json)
    print(f"prepared data in {data.prepared_dir} ({rejects.summary()}; duration plot: {plot})")
    if summary["val_texts_in_train"]:
        repeated, val = summary["val_texts_in_train"], summary["val"]["utterances"]
        print(
            f"warning: {repeated} of {val} validation utterances say a "
            "sentence that training utterances also say: validation losses and the AR stage's val/text_gain "
            "then reward recalling heard sentences, not reading new ones (a synthetic corpus needs "
            "data.synthetic.text.max_sentences_per_language at least its number of training utterances)"
        )
    return summary


if __name__ == "__main__":
    main()
