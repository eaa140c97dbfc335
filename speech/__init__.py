"""Open research reimplementation of MiniMax-Speech (arXiv 2505.07916)."""

__version__ = "0.1.0"
