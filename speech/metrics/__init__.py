"""Evaluation metrics: WER with pluggable ASR, speaker similarity with pluggable embedders, codec metrics."""
