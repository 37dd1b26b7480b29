"""The core of persona-rag: settings, value types, errors, embedder, Chroma store, search, answers.

Nothing heavy happens at import time: the model and the Chroma client are created on first use.
"""
