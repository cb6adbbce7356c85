"""Experiment packages: each a self-contained copy of the baseline with one idea changed."""
