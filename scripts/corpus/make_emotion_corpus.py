"""Builds the emotive renditions of the built-in synthetic corpus (speech.data.synthetic.emotion_corpus).

Usage::

    python scripts/corpus/make_synthetic_corpus.py          # first: the source corpus, data/synthetic_tiny
    python scripts/corpus/make_emotion_corpus.py            # data=synthetic_emotion_tiny

Rerunning continues an interrupted build; see docs/synthetic_corpus.md, "Emotive renditions".
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from speech.data.synthetic import EmotionCorpusConfig, build_emotion_corpus


@hydra.main(version_base="1.3", config_path="../../configs", config_name="entry/make_emotion_corpus")
def main(cfg: DictConfig) -> dict:
    settings = OmegaConf.to_container(cfg.data.emotion_corpus, resolve=True)
    source = settings.pop("source")  # where to read, not what to build: an argument, not a setting
    return build_emotion_corpus(
        source,
        cfg.data.root,
        EmotionCorpusConfig.from_dict(settings),
        num_workers=cfg.num_workers,
        progress=cfg.progress,
    )


if __name__ == "__main__":
    main()
