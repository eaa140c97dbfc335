"""ASR backends behind one interface (``ASRBackend``), used to score WER."""
