"""Shared fixtures: a small prepared corpus made of noise clips, built once per test session."""

import numpy as np
import pytest
import soundfile as sf
import torch

from speech.data.manifest import CutRules
from speech.data.prepare import prepare_corpus
from speech.data.records import Utterance
from speech.data.rejects import RejectLog

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_prepared(root, speakers=3, per_speaker=8, seed=0, phonemes=None):
    """3 speakers x 8 utterances of 0.6-1.3 s noise with random word transcripts; 21 train / 3 val cuts
    (``phonemes``: the BPE's front-end, see ``TextBPE``)."""
    rng = np.random.default_rng(seed)
    utts = []
    for s in range(speakers):
        for u in range(per_speaker):
            path = root / "wav" / f"s{s}_{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(
                path, (0.1 * rng.standard_normal(int(16000 * (0.6 + 0.1 * u)))).astype(np.float32), 16000
            )
            text = " ".join(rng.choice(WORDS, size=4 + u % 3))
            utts.append(Utterance(f"s{s}_{u}", path, text, f"spk{s}", "en"))
    out = root / "prepared"
    prepare_corpus(utts, out, rules=CutRules(min_duration=0.5), rejects=RejectLog(), bpe_vocab_size=300,
                   bpe_phonemes=phonemes, val_per_speaker=1, val_max_total=speakers,
                   progress=False)  # fmt: skip
    return out


@pytest.fixture
def prepared(tmp_path):
    """A fresh prepared corpus (tests may corrupt its files)."""
    return make_prepared(tmp_path)


@pytest.fixture(scope="session")
def shared_prepared(tmp_path_factory):
    """A prepared corpus shared by tests that only read it."""
    return make_prepared(tmp_path_factory.mktemp("shared_corpus"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread; on a loaded machine more threads only contend (an overfit
    test took 60 s with the default threads next to other jobs, 1 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
