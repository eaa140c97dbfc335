"""Per-utterance vs corpus WER on hand-computed cases, empty strings, and the bootstrap intervals."""

import math

import numpy as np
import pytest

from speech.metrics.bootstrap import bootstrap_mean_ci, bootstrap_ratio_ci, bootstrap_ratio_difference_ci
from speech.metrics.wer import corpus_wer, score_utterance, utterance_wer, word_errors


def test_counts_of_one_alignment():
    s = word_errors("a b c", "a x c d")
    assert (s.substitutions, s.deletions, s.insertions, s.hits, s.ref_words) == (1, 0, 1, 2, 3)
    assert s.wer == pytest.approx(2 / 3) and s.errors == 2


def test_utterance_average_differs_from_corpus_wer():
    stats = [
        word_errors("the cat sat", "the cat sat"),  # 0 errors / 3 words
        word_errors("a b", "a c d"),  # 1 sub + 1 ins / 2 words = 1.0
        word_errors(
            "one two three four five six seven eight nine ten", "one two three four five six seven eight nine"
        ),
    ]  # the last: 1 deletion / 10 words = 0.1
    assert [s.wer for s in stats] == pytest.approx([0.0, 1.0, 0.1])
    assert utterance_wer(stats) == pytest.approx((0.0 + 1.0 + 0.1) / 3)
    assert corpus_wer(stats) == pytest.approx(3 / 15)


def test_empty_reference_is_left_out_and_empty_hypothesis_is_all_deletions():
    empty_ref = score_utterance("...!", "something", "en")
    assert empty_ref.wer is None and empty_ref.ref_words == 0 and empty_ref.insertions == 1
    silent = score_utterance("three little words", "", "en")
    assert silent.wer == 1.0 and silent.deletions == 3
    stats = [empty_ref, silent, score_utterance("good morning", "good morning", "en")]
    assert utterance_wer(stats) == pytest.approx(0.5)
    assert corpus_wer(stats) == pytest.approx(3 / 5)
    assert math.isnan(utterance_wer([empty_ref])) and math.isnan(corpus_wer([]))


def test_normalization_before_scoring():
    assert score_utterance("Hello, World!", "hello world", "en").wer == 0.0
    assert score_utterance("Don't go.", "dont go", "en").wer == 0.5  # the apostrophe is kept
    zh = score_utterance("你好，世界。", "你好时节", "zh")
    assert zh.wer == 0.5 and zh.ref_words == 4 and zh.reference == "你 好 世 界"


def test_bootstrap_mean_ci_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(1).gamma(2.0, 0.05, size=200)
    ci = bootstrap_mean_ci(values, seed=3)
    assert ci.estimate == pytest.approx(values.mean())
    assert ci.low < ci.estimate < ci.high and ci.level == 0.95
    assert ci == bootstrap_mean_ci(values, seed=3)
    assert ci != bootstrap_mean_ci(values, seed=4)
    wide = bootstrap_mean_ci(values[:20], seed=3)
    assert wide.high - wide.low > ci.high - ci.low  # fewer utterances, wider interval


def test_bootstrap_edge_cases():
    assert math.isnan(bootstrap_mean_ci([]).estimate)
    one = bootstrap_mean_ci([0.25])
    assert one.low == one.estimate == one.high == 0.25
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_ci([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ratio_ci([1, 2], [3])


def test_bootstrap_ratio_ci_for_corpus_wer():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 30, size=300)
    errors = rng.binomial(words, 0.1)
    ci = bootstrap_ratio_ci(errors, words, seed=0)
    assert ci.estimate == pytest.approx(errors.sum() / words.sum())
    assert ci.low < ci.estimate < ci.high
    assert ci == bootstrap_ratio_ci(errors, words, seed=0)
    assert math.isnan(bootstrap_ratio_ci([1], [0]).estimate)


def test_the_paired_difference_of_two_ratios_cancels_what_the_utterances_share():
    """Words right minus chance: utterances differ a lot in length and common words, but every one gets 1
    more word right against its own reference than against others, so the paired interval is clear of zero
    and narrower than either ratio's own."""
    rng = np.random.default_rng(0)
    words = rng.integers(3, 30, 200).astype(float)
    chance = np.floor(words * rng.uniform(0, 0.5, 200))
    ci = bootstrap_ratio_difference_ci(chance + 1, words, chance, words, n_resamples=300)
    assert ci.estimate == pytest.approx(200 / words.sum())
    assert 0 < ci.low <= ci.estimate <= ci.high and ci.high - ci.low < 0.5 * ci.estimate
    own, other = (
        bootstrap_ratio_ci(chance + 1, words, n_resamples=300),
        bootstrap_ratio_ci(chance, words, n_resamples=300),
    )
    assert ci.high - ci.low < 0.5 * min(own.high - own.low, other.high - other.low)
    assert math.isnan(bootstrap_ratio_difference_ci([], [], [], [], n_resamples=10).estimate)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ratio_difference_ci([1], [2], [1, 2], [2, 3])
