"""A preallocated key/value cache: one per attention layer.

Decoding writes each new token's keys and values into a slot of a buffer sized to the
context, so step 1000 costs what step 10 costs (no growing `torch.cat`).
"""

import torch

from lmplay.errors import ConfigError


class KVCache:
    def __init__(self, batch_size: int, num_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ([B, H, T, D]) after what is cached; return all keys and values so far."""
        if k.shape[0] != self.keys.shape[0]:
            raise ConfigError(f"a batch of {k.shape[0]} for a KV cache of {self.keys.shape[0]} rows: "
                              f"model.new_cache(batch_size) makes the caches of a batch's size")
        if k.shape[1:2] + k.shape[3:] != self.keys.shape[1:2] + self.keys.shape[3:] or v.shape != k.shape:
            raise ConfigError(f"keys {list(k.shape)} and values {list(v.shape)} do not fit this KV cache of "
                              f"[batch, heads, positions, head_dim] = {list(self.keys.shape)}: an attention whose keys "
                              f"and values have other heads or head_dim than its num_heads and head_dim (grouped-query "
                              f"attention) overrides LMBase.new_cache to size its caches")
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > context {self.max_len}")
        self.keys[:, :, self.length:end] = k
        self.values[:, :, self.length:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reset(self) -> None:
        self.length = 0

    def drop_oldest(self, n: int) -> None:
        """Forget the first `n` positions of every row, moving the rest to the front."""
        if n > 0:
            for buffer in (self.keys, self.values):
                buffer[:, :, :self.length - n] = buffer[:, :, n:self.length].clone()
            self.length -= n

    def put_rows(self, rows: list[int], other: "KVCache", at: int) -> None:
        """Replace `rows` by `other`'s rows (in order), placed from position `at`; what is before it is zeroed."""
        for buffer, source in ((self.keys, other.keys), (self.values, other.values)):
            buffer[rows, :, :at] = 0
            buffer[rows, :, at:at + other.length] = source[:, :, :other.length]
