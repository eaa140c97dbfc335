"""Plain PyTorch models: they import torch, einops and speech.* only (never Lightning or Hydra)."""
