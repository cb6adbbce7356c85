"""Unified embeddings: a wide training-time embedding that collapses to a plain table on export (see README.md)."""
