"""Text in, text out: tokenization with the BOS the models were trained with, prompt cutting, streaming."""

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from lmplay.data.tokenizers import Tokenizer
from lmplay.device import autocast
from lmplay.generation.config import GenerationConfig
from lmplay.generation.decode import generate_tokens


def notice(message: str) -> None:
    """Something the user should know that is not an error (e.g. a prompt was cut); stderr keeps stdout pure text."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


def prompt_list(prompts: Sequence[str]) -> list[str]:
    """The prompts of a call as a list: one string would be a batch of its characters, and [] a batch of none."""
    if isinstance(prompts, str):
        raise TypeError(f"prompts should be a list of strings, like [{prompts[:20]!r}], not one string")
    if isinstance(prompts, (bytes, Mapping, set, frozenset)) or not isinstance(prompts, Iterable):  # a set: no order
        raise TypeError(f"prompts should be a list of strings, not {type(prompts).__name__}")
    prompts = list(prompts)  # once: a generator is read up by the first pass over it
    if not prompts:
        raise ValueError("no prompts given: pass a list of at least one string")
    for number, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {number} is {type(prompt).__name__} ({prompt!r:.40}), not a string")
    return prompts


def encode_prompts(tokenizer: Tokenizer, prompts: Sequence[str], context_len: int,
                   notify: Callable[[str], None] = notice) -> list[list[int]]:
    """Each prompt as `[eot, *tokens]`, cut from the left to the context.

    Training rows start with the eot token (it is GPT-2's BOS too), so a prompt continues a document
    from its beginning, as the model has seen documents begin.
    """
    encoded = []
    for number, ids in enumerate(tokenizer.encode_batch(prompt_list(prompts)), start=1):
        if len(ids) >= context_len:  # the start-of-text eot does not fit: said only when the prompt's own tokens lose
            if len(ids) > context_len:
                notify(f"prompt {number} has {len(ids)} tokens, more than the context ({context_len}); "
                       f"using its last {context_len}")
            ids = ids[-context_len:]
        else:
            ids = [tokenizer.eot_id, *ids]
        encoded.append(ids)
    return encoded


class TextStream:
    """Decodes tokens as they come and passes on the new text, holding back a token that ends inside a
    multi-byte character (it decodes as U+FFFD until the rest of the character arrives)."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], None]) -> None:
        self.tokenizer, self.write = tokenizer, write
        self.pending: list[int] = []

    def add(self, token: int) -> None:
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending)
        if not text.endswith("\ufffd"):
            self.write(text)
            self.pending = []

    def close(self) -> None:
        if self.pending:
            self.write(self.tokenizer.decode(self.pending))
            self.pending = []


def generate_text(model: torch.nn.Module, prompts: Sequence[str], config: GenerationConfig,
                  generator: torch.Generator | None = None, stream: Callable[[str], None] | None = None,
                  amp_dtype: torch.dtype | None = None, notify: Callable[[str], None] = notice) -> list[str]:
    """The continuation of each prompt (without the prompt). With `stream` and a single prompt, the text
    is also passed to `stream` piece by piece as it is generated. The model runs in eval mode (no
    dropout) and is put back in the mode it was in."""
    tokenizer = model.tokenizer
    encoded = encode_prompts(tokenizer, prompts, model.context_len, notify)
    streamer = TextStream(tokenizer, stream) if stream is not None and len(encoded) == 1 else None

    def on_step(tokens: list[int | None]) -> None:
        if tokens[0] is not None:
            streamer.add(tokens[0])

    was_training = model.training
    model.eval()
    try:
        with autocast(next(model.parameters()).device, amp_dtype):
            new = generate_tokens(model, encoded, config, eot_id=tokenizer.eot_id, generator=generator,
                                  on_step=on_step if streamer else None)
    finally:
        model.train(was_training)
    if streamer:
        streamer.close()
    return [tokenizer.decode(ids) for ids in new]
