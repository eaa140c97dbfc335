"""CTC forced alignment and where each BPE token starts: the frames of a known path come back, repeats need
a blank between them, and byte frames reach the BPE tokens through the characters that survive
normalization."""

import numpy as np
import pytest

from speech.text.bpe import TextBPE
from speech.text.byte_ctc import judge_target, text_to_ids
from speech.text.ctc_align import char_map, even_frames, even_starts, forced_align, token_starts


def log_probs_of_path(path: list[int], vocab: int = 8, sure: float = 0.9) -> np.ndarray:
    """``(T, vocab)`` log-probabilities that put ``sure`` on ``path[t]`` at each frame."""
    probs = np.full((len(path), vocab), (1 - sure) / (vocab - 1))
    probs[np.arange(len(path)), path] = sure
    return np.log(probs)


def test_forced_alignment_finds_where_each_target_is_first_emitted():
    # blank, 3, 3, blank, 5, blank, 5, 5, 2, blank
    frames = forced_align(log_probs_of_path([0, 3, 3, 0, 5, 0, 5, 5, 2, 0]), [3, 5, 5, 2])
    assert frames.tolist() == [1, 4, 6, 8]


def test_forced_alignment_follows_the_targets_not_the_argmax():
    """Frames whose argmax is another symbol still go to the targets, in order."""
    frames = forced_align(log_probs_of_path([0, 7, 7, 0, 6, 6, 0, 0]), [3, 4])
    assert frames.tolist() == sorted(frames.tolist()) and len(frames) == 2 and frames[1] > frames[0]


def test_forced_alignment_refuses_what_cannot_fit_and_the_blank():
    with pytest.raises(ValueError, match="cannot hold 3 targets with 1 repeats"):
        forced_align(log_probs_of_path([1, 1, 1]), [1, 1, 2])  # 1, blank, 1, 2 needs 4 frames
    with pytest.raises(ValueError, match="blank"):
        forced_align(log_probs_of_path([1, 0]), [0])
    assert forced_align(log_probs_of_path([0, 0]), []).tolist() == []


def test_characters_map_to_the_normalized_string_past_deleted_ones():
    text = "Hi, Bob!"
    assert judge_target(text, "en") == "hi bob"
    # H i , _ B o b !  ->  h i (next: the space) _ b o b (past the end)
    assert char_map(text, "hi bob").tolist() == [0, 1, 2, 2, 3, 4, 5, 6]


def test_a_normalization_that_adds_characters_falls_back_to_shares():
    assert char_map("ab", "a b c d").tolist() == [1, 5]


def test_bpe_tokens_start_where_their_first_surviving_character_is_said():
    bpe = TextBPE.train(["Hello, world! The cat sat."] * 20, 300)
    text = "Hello, world!"
    target = judge_target(text, "en")  # "hello world": 11 bytes
    byte_frames = np.array([2, 2, 3, 3, 4, 5, 7, 8, 8, 9, 10])  # "w" (byte 6) at frame 7
    offsets = bpe.offsets(text)
    pieces = [text[a:b] for a, b in offsets]
    assert pieces == ["Hello", ",", " world", "!"]
    starts = token_starts(offsets, text, target, byte_frames, end=12)
    # "," has no surviving character: it starts with the next one, the space (frame 5)
    assert starts.tolist() == [2, 5, 5, 12]
    assert len(text_to_ids(target)) == len(byte_frames)
    with pytest.raises(ValueError, match="10 byte frames for a 11-byte target"):
        token_starts(offsets, text, target, byte_frames[:10], end=12)


def test_a_bpe_over_phonemes_has_no_spans_in_the_text():
    bpe = TextBPE.train(["hello"] * 5, 300)
    bpe.phonemes = "espeak-ng"
    with pytest.raises(ValueError, match="phonemes"):
        bpe.offsets("hello")


@pytest.mark.parametrize(("n", "end"), [(4, 10), (7, 7), (5, 23), (9, 4)])
def test_even_starts_are_where_the_plain_hints_move_on(n, end):
    """Read as a pointer, the even starts give each audio token j the plain hints' text token,
    ``floor((j + 1/2) n / end)``."""
    starts = even_starts(n, end)
    j = np.arange(end)
    pointer = np.clip(np.searchsorted(starts, j, side="right") - 1, 0, n - 1)
    assert pointer.tolist() == np.floor((j + 0.5) * n / end).astype(int).tolist()


def test_even_frames_put_each_target_in_the_middle_of_its_share():
    assert even_frames(4, 10).tolist() == [1, 3, 6, 8] and even_frames(0, 10).tolist() == []
