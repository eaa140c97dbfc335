"""Audio I/O (soundfile), resampling (soxr) and features (torch)."""
