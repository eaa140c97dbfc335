"""Builds the built-in synthetic corpus (speech.data.synthetic) under ``data.root``.

Usage::

    python scripts/corpus/make_synthetic_corpus.py                                   # data=synthetic_tiny
    python scripts/corpus/make_synthetic_corpus.py data=synthetic_full num_workers=16

Rerunning continues an interrupted build; see docs/synthetic_corpus.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from speech.data.synthetic import CorpusConfig, build_corpus
from speech.metrics.separability import check_separability


@hydra.main(version_base="1.3", config_path="../../configs", config_name="entry/make_synthetic_corpus")
def main(cfg: DictConfig) -> dict:
    config = CorpusConfig.from_dict(OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    return build_corpus(
        cfg.data.root,
        config,
        sample_rate=cfg.data.sample_rate,
        num_workers=cfg.num_workers,
        separability=check_separability if cfg.separability else None,
        progress=cfg.progress,
    )


if __name__ == "__main__":
    main()
