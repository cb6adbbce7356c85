"""Reusable torch layers that experiments compose: attention with a KV cache, blocks, embeddings, weights.
An experiment's own idea (a new attention, an embedding) lives in its package beside its model.py."""

from lmplay.modules.attention import MultiHeadAttention
from lmplay.modules.block import MLP, Block
from lmplay.modules.embeddings import TokenPositionEmbedding
from lmplay.modules.kv_cache import KVCache
from lmplay.modules.weights import init_gpt2_weights

__all__ = ["MultiHeadAttention", "MLP", "Block", "TokenPositionEmbedding", "KVCache", "init_gpt2_weights"]
