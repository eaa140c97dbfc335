"""Multilingual byte-level BPE for text tokens (paper section 2: the AR Transformer reads BPE text tokens).

A thin wrapper around HuggingFace ``tokenizers``: ByteLevel pre-tokenizer and decoder over a BPE model, so
every string of any script encodes without unknown tokens and decodes back exactly. Text should be
normalized (``speech.text.normalize``) before it is encoded; the BPE itself does not normalize. Named
``TextBPE`` because "tokenizer" in this project means the audio tokenizer (``speech.models.audio_tokenizer``).

A BPE may read phonemes (``phonemes="espeak-ng"``, ``speech.text.phonemes``): it was trained on the espeak-ng
IPA of its transcripts and converts what it encodes the same way, so it needs each text's language. The
setting travels with the BPE: :meth:`to_str` then wraps the HuggingFace JSON as ``{"phonemes": ..., "bpe":
...}`` (a plain BPE keeps the plain format).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from speech.text.phonemes import bpe_input, bpe_inputs, check_phonemes

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
PAD_ID = 0
# Byte-level BPE starts from one token per byte value.
_BYTE_TOKENS = 256
MIN_VOCAB_SIZE = _BYTE_TOKENS + len(SPECIAL_TOKENS)


class TextBPE:
    """Byte-level BPE with ``<pad>`` (id 0), ``<bos>`` and ``<eos>``.

    Build one with :meth:`train` or :meth:`load`; the constructor wraps an existing ``tokenizers.Tokenizer``.

    Args:
        hf: A HuggingFace byte-level BPE ``Tokenizer`` holding the three special tokens, ``<pad>`` with id 0.
        phonemes: ``None`` (it reads the text as written) or ``"espeak-ng"`` (it reads the IPA of the
            languages ``speech.text.phonemes`` converts).

    Raises:
        ValueError: a special token is missing, ``<pad>`` does not have id 0, or ``phonemes`` is unknown.
    """

    def __init__(self, hf: Tokenizer, phonemes: str | None = None) -> None:
        check_phonemes(phonemes)
        ids = {token: hf.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"text BPE lacks the special tokens {missing}; use TextBPE.train")
        if ids[PAD_TOKEN] != PAD_ID:
            raise ValueError(f"{PAD_TOKEN} must have id {PAD_ID}, got {ids[PAD_TOKEN]}")
        self._hf = hf
        self.phonemes = phonemes
        self._bos_id = ids[BOS_TOKEN]
        self._eos_id = ids[EOS_TOKEN]

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        min_frequency: int = 2,
        languages: Iterable[str] | None = None,
        phonemes: str | None = None,
    ) -> TextBPE:
        """Trains a byte-level BPE on raw strings.

        Training is deterministic: the same texts give the same vocabulary and merges.

        Args:
            texts: Normalized transcripts, any languages.
            vocab_size: Target size including the 256 byte tokens and 3 special tokens; a small corpus may
                stop short of it (no pair left that occurs ``min_frequency`` times).
            min_frequency: A pair must occur this often to be merged.
            languages: The language of each text, needed with ``phonemes``.
            phonemes: The front-end, see the class; the BPE is then trained on what it will encode.

        Returns:
            The trained BPE.

        Raises:
            ValueError: ``vocab_size`` is below 259, ``texts`` holds no non-empty string, ``phonemes`` is
                unknown or set without ``languages``.
            speech.text.espeak.PhonemizerError: libespeak-ng is missing or failed.
        """
        check_phonemes(phonemes)
        if phonemes is not None:
            if languages is None:
                raise ValueError("a BPE over phonemes needs the language of each text (languages=...)")
            texts = bpe_inputs(texts, languages, phonemes)
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be at least {MIN_VOCAB_SIZE} ({_BYTE_TOKENS} byte tokens + "
                f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}"
            )
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        seen = _Counted(texts)
        hf.train_from_iterator(seen, trainer=trainer)
        if not seen.non_empty:
            raise ValueError("no text to train the BPE on: texts is empty or holds only empty strings")
        return cls(hf, phonemes)

    def save(self, path: str | Path) -> Path:
        """Writes the BPE as one HuggingFace ``tokenizer.json``-style file (folders made); returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.phonemes is None:
            self._hf.save(str(path), pretty=True)
        else:
            path.write_text(self.to_str())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TextBPE:
        """Loads a file written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: ``path`` is not a BPE file of this kind.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: text BPE not found; run scripts/prepare_data.py to train it on the corpus "
                "transcripts, or TextBPE.train(...).save(path)"
            )
        try:
            json_str = path.read_text(encoding="utf-8")
            json.loads(json_str)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a valid BPE file ({err})") from err
        try:
            return cls.from_str(json_str)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    def to_str(self) -> str:
        """The BPE as a JSON string (what :meth:`save` writes), e.g. to store it in a checkpoint."""
        if self.phonemes is None:
            return self._hf.to_str()
        wrapped = {"phonemes": self.phonemes, "bpe": json.loads(self._hf.to_str())}
        return json.dumps(wrapped, ensure_ascii=False)

    @classmethod
    def from_str(cls, json_str: str) -> TextBPE:
        """Rebuilds a BPE from :meth:`to_str`'s JSON.

        Raises:
            ValueError: the string is not a BPE of this kind.
        """
        phonemes = None
        try:
            data = json.loads(json_str)
            if isinstance(data, dict) and set(data) == {"phonemes", "bpe"}:
                phonemes, json_str = data["phonemes"], json.dumps(data["bpe"])
            hf = Tokenizer.from_str(json_str)
        except Exception as err:  # tokenizers raises a bare Exception for unparsable JSON
            raise ValueError(f"not a valid BPE JSON string ({err})") from err
        return cls(hf, phonemes)

    def encode(self, text: str, language: str | None = None) -> list[int]:
        """Token ids of ``text``, without special tokens. ``language`` is needed when the BPE reads phonemes.

        Raises:
            ValueError: the BPE reads phonemes and ``language`` is missing.
            speech.text.espeak.PhonemizerError: libespeak-ng is missing or failed.
        """
        return self._hf.encode(bpe_input(text, language, self.phonemes), add_special_tokens=False).ids

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The character span ``(start, stop)`` in ``text`` of each token of ``encode(text)``.

        Raises:
            ValueError: the BPE reads phonemes, whose tokens have no span in the text.
        """
        if self.phonemes is not None:
            raise ValueError(f"a BPE over phonemes ({self.phonemes}) has no character spans in the text")
        return list(self._hf.encode(text, add_special_tokens=False).offsets)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special tokens are dropped, so ``decode(encode(text)) == text`` (the IPA of the
        text for a BPE that reads phonemes)."""
        return self._hf.decode(list(ids), skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included (the embedding table size)."""
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``: always ``PAD_ID`` (0)."""
        return PAD_ID

    @property
    def bos_id(self) -> int:
        """Id of ``<bos>``."""
        return self._bos_id

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>``."""
        return self._eos_id

    def __len__(self) -> int:
        return self.vocab_size


class _Counted:
    """Iterates over ``texts`` and remembers whether any of them was non-empty."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.non_empty = False

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.non_empty = self.non_empty or bool(text)
            yield text
