"""Corpora, manifests, batching and feature caches."""
