"""The decode loop: token prompts in, new tokens out, with or without the KV cache.

Several prompts run as one batch, left-padded to a common width so that every row's newest token
sits in the last column and one forward step serves all rows. A key mask hides the padding and
each row's positions start at 0 on its first real token, so a row gets the tokens it would get alone.
"""

import inspect
from collections.abc import Callable, Sequence

import torch

from lmplay.errors import ConfigError
from lmplay.generation.config import GenerationConfig
from lmplay.generation.sampling import pick_next
from lmplay.modules import KVCache
from lmplay.modules.attention import causal_mask

StepCallback = Callable[[list[int | None]], None]
"""Called after each step with every row's new token, or None for a row that has already stopped."""


class Windows:
    """Each row's tokens so far and where the part the model sees, its window, starts.

    A row that outgrows the context has its window moved forward by `stride` tokens and its cache is
    rebuilt from the shorter window: one prefill per `stride` new tokens instead of one per token.
    Cached and uncached decoding slide at the same moments, so they see the same tokens.
    """

    def __init__(self, prompts: Sequence[Sequence[int]], context_len: int, stride: int) -> None:
        self.rows = [list(p) for p in prompts]
        self.context_len = context_len
        self.stride = stride
        self.starts = [max(0, len(r) - context_len) for r in self.rows]

    def lengths(self) -> list[int]:
        return [len(row) - start for row, start in zip(self.rows, self.starts)]

    def append(self, tokens: Sequence[int]) -> None:
        for row, token in zip(self.rows, tokens):
            row.append(token)

    def slide(self) -> list[int]:
        """Move the window of each row longer than the context; the rows moved."""
        moved = []
        for i, length in enumerate(self.lengths()):
            if length > self.context_len:
                self.starts[i] += length - self.context_len + self.stride - 1
                moved.append(i)
        return moved

    def batch(self, pad_id: int, device: torch.device, rows: Sequence[int] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows (of `rows`, else all) as left-padded ids [B, W] and the mask of their real tokens [B, W]."""
        rows = range(len(self.rows)) if rows is None else rows
        windows = [self.rows[i][self.starts[i]:] for i in rows]
        width = max(len(w) for w in windows)
        ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.bool)
        for i, window in enumerate(windows):
            ids[i, width - len(window):] = torch.tensor(window, dtype=torch.long)
            mask[i, width - len(window):] = True
        return ids.to(device), mask.to(device)


def padded_causal_mask(real: torch.Tensor) -> torch.Tensor:
    """[B, 1, W, W] attention mask (True = attend): causal, and real keys only.

    Each query may also see itself, so a padding query is never fully masked: SDPA would return NaN
    for it, and a NaN value stays NaN even under a zero attention weight, poisoning later layers.
    """
    width = real.shape[1]
    itself = torch.eye(width, dtype=torch.bool, device=real.device)
    return (causal_mask(width, width, real.device) & (real[:, None, :] | itself))[:, None]


class Decoder:
    """Runs the model over the windows: the whole windows without a cache (or after a slide), else
    only the newest column, whose keys and values join the preallocated cache."""

    def __init__(self, model: torch.nn.Module, windows: Windows, cache: list[KVCache] | None, pad_id: int) -> None:
        self.model, self.windows, self.cache, self.pad_id = model, windows, cache, pad_id
        self.device = next(model.parameters()).device
        self.padded = False
        self.key_mask = torch.zeros((len(windows.rows), windows.context_len), dtype=torch.bool, device=self.device)
        self.next_positions = torch.zeros(len(windows.rows), dtype=torch.long, device=self.device)
        parameters = inspect.signature(model.forward).parameters
        self.last_only = "last_only" in parameters
        self.takes_padding = {"positions", "attn_mask"} <= parameters.keys() or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def prefill(self) -> torch.Tensor:
        """Logits [B, vocab] after the whole windows; with a cache, the cache then holds exactly them."""
        ids, real = self.windows.batch(self.pad_id, self.device)
        self.padded = not bool(real.all())
        self.check_padding()
        if self.cache is not None:
            for layer in self.cache:
                layer.reset()
            self.key_mask[:, : real.shape[1]] = real
        logits, self.next_positions = self.run(ids, real, self.cache)
        return logits

    def check_padding(self) -> None:
        if self.padded and not self.takes_padding:
            raise ConfigError(f"{type(self.model).__name__}.forward takes no positions and attn_mask, which prompts of "
                              f"different lengths need in one batch: run them one at a time (batch_size=1 for "
                              f"lmplay.generate, one prompt a call in Python), or give its forward the baseline's "
                              f"positions and attn_mask")

    def run(self, ids: torch.Tensor, real: torch.Tensor, cache: list[KVCache] | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last column's logits after left-padded windows (`real` marks their tokens), and each row's next
        position."""
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        padded = not bool(real.all())
        return self.forward(ids, positions, padded_causal_mask(real) if padded else None, cache), positions[:, -1] + 1

    def advance(self, tokens: torch.Tensor, values: list[int]) -> torch.Tensor:
        """Logits [B, vocab] after appending `tokens` ([B]; `values` is the same as a list) to every row."""
        self.windows.append(values)
        moved = self.windows.slide()
        if self.cache is None or len(moved) == len(self.windows.rows) or (moved and not self.takes_padding):
            return self.prefill()
        if moved:  # rebuilding every row's cache for each row that slides cost more than decoding them alone
            self.make_room()
        positions = self.next_positions[:, None].clone()
        positions[moved] = 0  # past the context; rebuild() replaces what the step computes for these rows
        self.next_positions = self.next_positions + 1
        width = self.cache[0].length + 1
        self.key_mask[:, width - 1] = True  # the new column is real in every row (an older layout may differ)
        attn_mask = self.key_mask[:, None, None, :width] if self.padded else None
        logits = self.forward(tokens[:, None], positions, attn_mask, self.cache)
        return self.rebuild(moved, logits) if moved else logits

    def make_room(self) -> None:
        """Drop the cache's oldest columns that no row's window reaches now, so that the new column fits."""
        drop = self.cache[0].length + 1 - max(self.windows.lengths())
        for layer in self.cache:
            layer.drop_oldest(drop)
        self.key_mask = self.key_mask.roll(-drop, dims=1)

    def rebuild(self, rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        """Prefill the slid `rows` alone and put their caches, right-aligned, into the batch's: the other rows keep
        theirs. Their logits replace the batch step's, which read their old windows."""
        ids, real = self.windows.batch(self.pad_id, self.device, rows)
        own = self.model.new_cache(len(rows))
        logits[rows], self.next_positions[rows] = self.run(ids, real, own)
        width, own_width = self.cache[0].length, ids.shape[1]
        for layer, fresh in zip(self.cache, own):
            layer.put_rows(rows, fresh, width - own_width)
        self.key_mask[rows, :width] = False
        self.key_mask[rows, width - own_width:width] = real
        self.padded = True
        return logits

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor | None,
                cache: list[KVCache] | None) -> torch.Tensor:
        """The last column's logits over the tokenizer's tokens (a vocabulary padded for speed has more
        columns, never to be picked). Without padding the model's own positions are right, so a model whose
        forward takes only (x, cache) still generates; padding needs positions and attn_mask.

        A forward that takes `last_only` computes the output layer for the last column alone: a prefill of
        16 windows of 1024 tokens with GPT-2's 50k vocabulary would otherwise hold 3.3 GB of fp32 logits."""
        kwargs = {"positions": positions, "attn_mask": attn_mask} if attn_mask is not None or self.padded else {}
        if self.last_only:
            kwargs["last_only"] = True
        out = self.model(ids, cache=cache, **kwargs)
        logits = out[0] if cache is not None else out
        return self.model.token_logits(logits[:, -1])


def seen_mask(rows: Sequence[Sequence[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """Boolean [B, vocab]: which tokens each row already holds (for the repetition penalty)."""
    seen = torch.zeros((len(rows), vocab_size), dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        seen[i, torch.tensor(row, dtype=torch.long, device=device)] = True
    return seen


@torch.no_grad()
def generate_tokens(model: torch.nn.Module, prompts: Sequence[Sequence[int]], config: GenerationConfig,
                    eot_id: int, generator: torch.Generator | None = None,
                    on_step: StepCallback | None = None) -> list[list[int]]:
    """Continue each prompt (token ids) by up to `config.max_new_tokens` tokens; returns only the new ones.

    A row stops at `eot_id` when `config.stop_at_eot` (the eot itself is not returned); `eot_id` also
    pads. A prompt longer than the model's context keeps its last `context_len` tokens; a full window
    slides by a quarter of the context.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token")
    context_len = model.context_len
    windows = Windows(prompts, context_len, max(1, context_len // 4))
    cache = (model.new_cache(len(windows.rows)) or None) if config.use_cache else None  # []: no layer to cache
    decoder = Decoder(model, windows, cache, pad_id=eot_id)
    new: list[list[int]] = [[] for _ in windows.rows]
    stopped = [False] * len(new)
    if config.max_new_tokens == 0:
        return new
    logits = decoder.prefill()
    seen = None
    if config.repetition_penalty != 1.0:
        seen = seen_mask(windows.rows, logits.shape[-1], logits.device)
        seen[:, eot_id] = False  # the eot each prompt starts with marks a document's start, not text it repeats
    for step in range(config.max_new_tokens):
        tokens = pick_next(logits, config, seen, generator)
        values = tokens.tolist()
        kept: list[int | None] = []
        for i, token in enumerate(values):
            stopped[i] = stopped[i] or (config.stop_at_eot and token == eot_id)
            kept.append(None if stopped[i] else token)
            if not stopped[i]:
                new[i].append(token)
        if on_step is not None:
            on_step(kept)
        if all(stopped) or step == config.max_new_tokens - 1:
            break
        if seen is not None:
            seen.scatter_(1, tokens[:, None], True)
        logits = decoder.advance(tokens, values)
    return new
