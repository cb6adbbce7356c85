"""lmplay: try a language-model idea against a fair GPT-2-like baseline."""

__version__ = "0.1.0"
