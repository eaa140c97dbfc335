"""Speaker-embedding backends behind one interface (``SpeakerEmbedder``), used to score SIM."""
