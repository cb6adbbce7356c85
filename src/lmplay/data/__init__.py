"""The data layer: tokenizers, dataset sources, row framing, batchers and curriculum plans.

The runner uses `Curriculum` (curriculum.py), `Batch` (batch.py) and `get_tokenizer` (tokenizers.py).
"""
