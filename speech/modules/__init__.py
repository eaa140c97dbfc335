"""Reusable building blocks (attention, convolution, normalization) shared by the models."""
