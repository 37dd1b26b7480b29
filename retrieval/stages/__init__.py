"""Retrieval stages: one small typed unit per file, ordered by :mod:`retrieval.pipeline`."""
