"""Training losses, one per file (sentence-transformers style): each docstring says what it expects."""
