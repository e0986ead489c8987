"""Numpy-only serving logic used by the Triton model.py adapters, and the local server."""
