"""LRAdd: learned per-channel residual adds, alpha * x + beta * y (see README.md)."""
