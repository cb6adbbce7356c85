"""Reusable torch layers that experiments compose: attention with a KV cache, blocks, embeddings, weights.
An experiment's own idea (a new attention, an embedding) lives in its package beside its model.py."""

from lmplay.modules.attention import MultiHeadAttention
from lmplay.modules.block import MLP, Block
from lmplay.modules.embeddings import TokenPositionEmbedding
from lmplay.modules.kv_cache import KVCache
from lmplay.modules.weights import init_gpt2_weights

__all__ = ["MultiHeadAttention", "MLP", "Block", "TokenPositionEmbedding", "KVCache", "init_gpt2_weights"]

# The ported ideas' layers lived here until they moved beside their model.py: module -> (new file, its classes)
MOVED = {"lradd": ("experiments/lradd/lradd.py", ("LRAdd",)),
         "nn_memory": ("experiments/nnmemory/nn_memory.py", ("NNMemory", "NNMemoryRead")),
         "temperature_attention": ("experiments/attn_temp/temperature_attention.py", ("LearnedTemperatureAttention",)),
         "unified_embedding": ("experiments/unified_embed/unified_embedding.py", ("UnifiedEmbedding",)),
         "value_norm_attention": ("experiments/value_norm/value_norm_attention.py", ("ValueNormAttention",))}


def moved_layer(error: Exception) -> str:
    """A hint for code copied before a port's layer moved (`from lmplay.modules.lradd import LRAdd`)."""
    text = str(error)
    for module, (file, classes) in MOVED.items():
        if f"lmplay.modules.{module}" in text or any(f"'{c}' from 'lmplay.modules'" in text for c in classes):
            return (f"; lmplay.modules.{module} moved to {file.removesuffix('.py').replace('/', '.')} ({file} in "
                    f"lmplay's checkout): import {', '.join(classes)} from there, or copy the file beside your "
                    f"model.py")
    return ""
