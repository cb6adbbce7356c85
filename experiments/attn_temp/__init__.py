"""Learned attention temperature: each query token sets, per head, how sharp its attention is (see README.md)."""
