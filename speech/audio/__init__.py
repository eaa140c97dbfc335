"""Audio I/O (soundfile), resampling (soxr), features (torch), the WORLD vocoder and prosody measurements."""
