"""Reusable torch layers that experiments compose: attention with a KV cache, blocks, embeddings, and the
layers of the shipped experiments' ideas."""

from lmplay.modules.attention import MultiHeadAttention
from lmplay.modules.block import MLP, Block
from lmplay.modules.embeddings import TokenPositionEmbedding
from lmplay.modules.kv_cache import KVCache
from lmplay.modules.lradd import LRAdd
from lmplay.modules.nn_memory import NNMemory, NNMemoryRead
from lmplay.modules.temperature_attention import LearnedTemperatureAttention
from lmplay.modules.unified_embedding import UnifiedEmbedding
from lmplay.modules.value_norm_attention import ValueNormAttention
from lmplay.modules.weights import init_gpt2_weights

__all__ = ["MultiHeadAttention", "MLP", "Block", "TokenPositionEmbedding", "KVCache", "init_gpt2_weights", "LRAdd",
           "NNMemory", "NNMemoryRead", "LearnedTemperatureAttention", "UnifiedEmbedding", "ValueNormAttention"]
