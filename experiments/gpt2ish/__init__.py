"""The GPT-2-like baseline every idea is compared against."""
