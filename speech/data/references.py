"""Speaker references that never leak content: each target gets a *different* utterance of its speaker.

MiniMax-Speech section 3.6: using the target itself as the speaker-encoder reference causes semantic
leakage. Choices are a pure function of ``(seed, epoch, target id)``, so they need no RNG state to
resume exactly and do not depend on worker count or batch composition.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

from lhotse.cut import Cut


class ReferenceSampler:
    """Picks, for a target cut, another cut of the same speaker.

    Args:
        cuts: Every cut that may serve as a reference (usually the training cuts); each needs a
            supervision with a ``speaker``.
        seed: Base seed; ``set_epoch`` changes the draw each epoch.
    """

    def __init__(self, cuts: Iterable[Cut], seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0
        self.cuts: dict[str, Cut] = {}
        self.by_speaker: dict[str, list[str]] = {}
        for cut in cuts:
            self.cuts[cut.id] = cut
            self.by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut.id)
        for ids in self.by_speaker.values():
            ids.sort()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, cut_id: str) -> random.Random:
        digest = hashlib.blake2b(f"{self.seed}/{self.epoch}/{cut_id}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "little"))

    def reference_for(self, target: Cut) -> Cut:
        """Returns a cut of ``target``'s speaker other than ``target``.

        Raises:
            KeyError: the speaker has no other utterance (``drop_single_utterance_speakers`` removes
                such speakers when the data is prepared).
        """
        speaker = target.supervisions[0].speaker
        others = [i for i in self.by_speaker.get(speaker, ()) if i != target.id]
        if not others:
            raise KeyError(
                f"speaker {speaker!r} has no utterance other than {target.id!r} to use as a reference"
            )
        return self.cuts[self._rng(target.id).choice(others)]

    def crop(self, ref: Cut, max_duration: float | None, key: str) -> Cut:
        """A random window of at most ``max_duration`` seconds of ``ref`` (deterministic in ``key``)."""
        if max_duration is None or ref.duration <= max_duration:
            return ref
        offset = self._rng(f"crop/{key}").uniform(0.0, ref.duration - max_duration)
        return ref.truncate(offset=offset, duration=max_duration, preserve_id=True)
