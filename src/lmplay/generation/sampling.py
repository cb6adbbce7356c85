"""Turning a row of next-token logits into a token: the logit processors and the final pick.

Each processor takes and returns float logits of shape [B, vocab]; a removed token gets -inf, so
softmax gives it probability exactly zero.
"""

import torch
import torch.nn.functional as F

from lmplay.errors import ConfigError
from lmplay.generation.config import GenerationConfig


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's rule (Keskar et al. 2019), as in Hugging Face: a token already in the text has its logit
    divided by `penalty` when positive and multiplied by it when negative, so penalty > 1 always makes
    it less likely whatever the logit's sign. `seen` is a boolean [B, vocab] mask."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept too)."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest set of most likely tokens whose total
    probability reaches p. A token is kept when the tokens more likely than it hold less than p, so
    the most likely token always survives."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    remove_sorted = mass_before >= p
    remove_sorted[..., 0] = False  # a p that rounds to 0 in float32 (1e-300) would remove even the top token
    remove = torch.empty_like(remove_sorted).scatter_(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def process_logits(logits: torch.Tensor, config: GenerationConfig, seen: torch.Tensor | None) -> torch.Tensor:
    """All the configured processors, in Hugging Face's order; what remains is what the token is drawn from."""
    logits = logits.float()  # float32, not 64: Apple's GPUs (mps) have no float64
    if config.repetition_penalty != 1.0 and seen is not None:  # a tiny penalty sends seen logits past the largest
        penalized = apply_repetition_penalty(logits, seen, config.repetition_penalty)  # a huge one below the
        finfo = torch.finfo(logits.dtype)  # smallest float (all seen: NaN); a banned token's -inf stays
        logits = torch.where(torch.isneginf(logits), logits, penalized.clamp(finfo.min, finfo.max))
    if config.greedy:
        return logits
    # from the row's top score, so that a tiny temperature (1e-300) sends the others to -inf, not the top one to inf;
    # the top ones stay 0 even where the temperature is 0 in float32 (0/0 was NaN)
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    logits = torch.where(shifted == 0, shifted, shifted / config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    return top_p_filter(logits, config.top_p)


def pick_next(logits: torch.Tensor, config: GenerationConfig, seen: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row ([B] long): argmax when greedy, else a draw from the processed distribution."""
    if torch.isnan(logits).any():  # the stream syncs every token anyway
        raise ConfigError("the model's next-token scores are NaN: from weights that are not finite (a diverged "
                          "checkpoint: sample from an earlier one), or from a forward that makes NaN of finite weights "
                          "(the model's code, or amp: try amp=false)")
    logits = process_logits(logits, config, seen)
    if config.greedy:
        return logits.argmax(dim=-1)
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
