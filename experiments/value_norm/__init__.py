"""Value-norm attention: the baseline with a LayerNorm on each head's values (see README.md)."""
