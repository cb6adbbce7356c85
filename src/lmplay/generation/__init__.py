"""Generation: the KV-cached decode loop, sampling, and the text layer around them.

`lmplay.generation.loading` (a checkpoint back into a model) is imported on its own: it needs the
runner's registry, which itself needs `lmplay.model`, which uses this package.
"""

from lmplay.generation.config import GenerationConfig
from lmplay.generation.decode import generate_tokens
from lmplay.generation.sampling import apply_repetition_penalty, pick_next, top_k_filter, top_p_filter
from lmplay.generation.text import encode_prompts, generate_text

__all__ = ["GenerationConfig", "generate_tokens", "generate_text", "encode_prompts", "pick_next",
           "apply_repetition_penalty", "top_k_filter", "top_p_filter"]
