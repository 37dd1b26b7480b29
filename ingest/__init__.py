"""Card loading and validation, chunking (pure functions) and indexing."""
