"""MBase and LMBase: what every lmplay model shares, so an experiment's model.py only holds its idea."""

from collections.abc import Iterable, Sequence
from functools import cached_property

import numpy as np
import torch
from torch import nn

from lmplay.config import check_seed
from lmplay.data.batching import collate
from lmplay.data.tokenizers import Tokenizer, get_tokenizer
from lmplay.errors import ConfigError
from lmplay.generation.config import GenerationConfig
from lmplay.generation.text import generate_text, notice, prompt_list
from lmplay.loss import next_token_loss, split_terms
from lmplay.modules import KVCache, MultiHeadAttention
from lmplay.stats.mfu import flops_per_token, matmul_params


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether no tensor holds a NaN or inf, with one device sync for them all: what a save checks (a checkpoint
    never holds NaN weights) and what sampling checks first (a diverged run's weights give only garbage)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class MBase(nn.Module):
    """Tokenization, device handling and parameter counting.

    `construction_args` are the architecture arguments the model was built with: the checkpoint
    stores them, and a resumed run or `generate` rebuilds the same model from them.
    """

    def __init__(self, tokenizer: str, context_len: int, **construction_args) -> None:
        super().__init__()
        # drawn before any layer is built: an idea's own layers draw more, and init_gpt2_weights seeds each
        # weight from this, so the weights it shares with the baseline start as the baseline's at the same seed
        self.init_seed = int(torch.randint(2**62, (), device="cpu").item())  # cpu: a model built on meta too
        self.tokenizer_name = tokenizer
        self.tokenizer_vocab_size = get_tokenizer(tokenizer).vocab_size  # a plain int: compiled code reads it
        vocab_size = construction_args.get("vocab_size")
        if vocab_size is not None and vocab_size < self.tokenizer_vocab_size:  # an id past the table: IndexError
            raise ConfigError(f"vocab_size={vocab_size} is smaller than the {tokenizer!r} tokenizer's "
                              f"{self.tokenizer_vocab_size} ids; use vocab_size >= {self.tokenizer_vocab_size}, or "
                              f"the tokenizer the vocabulary was meant for (tokenizer='bytes' has 257)")
        self.context_len = context_len
        self.construction_args = dict(tokenizer=tokenizer, context_len=context_len, **construction_args)

    @property
    def tokenizer(self) -> Tokenizer:
        return get_tokenizer(self.tokenizer_name)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def size_text(self) -> str:
        """"N parameters", saying how many are the rows of a vocabulary padded past the tokenizer's (vocab_multiple):
        never trained, they made a padded baseline read 9% larger than an idea without padding (test_runner)."""
        padding = self.padding_count()
        return f"{self.parameter_count():,} parameters" + (f" ({padding:,} of them vocabulary padding)" * bool(padding))

    def trained_parameter_count(self) -> int:
        """The parameters less a padded vocabulary's rows (never trained): the size that compares across runs, as a
        run with vocab_multiple=64 is the same model as one without."""
        return self.parameter_count() - self.padding_count()

    def padding_count(self) -> int:
        """The parameters of the rows of a vocabulary padded past the tokenizer's (vocab_multiple)."""
        vocab, real = self.construction_args.get("vocab_size"), self.tokenizer_vocab_size
        # the token tables and the output layer (the baseline's lm_head), by name: a layer as wide as the padded
        # vocabulary (384, nanoGPT's shakespeare-char width) is no padding; a tied lm_head is the embedding's table
        tables = {id(m.weight): m.weight for name, m in self.named_modules()
                  if isinstance(m, nn.Embedding) and m.num_embeddings == vocab and not name.endswith("pos")
                  or name == "lm_head" and isinstance(m, nn.Linear) and m.out_features == vocab}
        return sum((vocab - real) * w[0].numel() for w in tables.values()) if vocab and vocab > real else 0

    def _tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(prompt_list(texts))


LMOutput = torch.Tensor | tuple[torch.Tensor, list[KVCache]]  # a forward's logits, and with a cache the cache


class LMBase(MBase):
    """A next-token language model: `forward(x, cache=None)` returns logits ([B, T, vocab]).

    Given a cache (a list with one `KVCache` per attention layer, from `new_cache`) forward
    also returns it, updated with the new positions.
    """

    # On a GPU, loss_terms' cross-entropy and accuracy run as lmplay's Triton kernels (lmplay/kernels/
    # cross_entropy.py); the runner sets this from `fused_loss`. The same loss, gradient and count either way.
    fused_loss: bool = True
    loaded_as: str | None = None  # the experiment load_model read it as, which save_model takes for a name of its own

    def new_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One preallocated cache per attention layer (each `MultiHeadAttention`), in the order the layers run. An
        attention of one's own that is no MultiHeadAttention gets none: subclass it, or override this; a model with
        no cache at all decodes without one (the same tokens, each step a full forward)."""
        param = next(self.parameters())
        return [KVCache(batch_size, m.num_heads, max_len or self.context_len, m.head_dim, param.device, param.dtype)
                for m in self.modules() if isinstance(m, MultiHeadAttention)]

    def next_positions(self, x: torch.Tensor, cache: list[KVCache] | None) -> torch.Tensor:
        """The positions of `x`'s tokens after what `cache` holds, for forward's default. Here, not in each
        model.py: the copies of the baseline lost its check, and a token past the context was the position
        embedding's bare IndexError."""
        start = cache[0].length if cache else 0
        if start + x.shape[1] > self.context_len:
            raise ValueError(f"{x.shape[1]} tokens after {start} cached reach past context_len={self.context_len}: "
                             f"feed at most {self.context_len - start} (generate slides its window past the context "
                             f"itself)")
        return torch.arange(start, start + x.shape[1], device=x.device)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token of a `seq_len`-token sequence, for MFU (lmplay/stats/mfu.py): 6 per parameter a
        token goes through in a matmul, and attention's scores and values. A model that applies parameters
        otherwise (once a forward pass, or once per distinct token) or computes more per token says so here:
        MFU is only as right as this count."""
        attention = [m for m in self.modules() if isinstance(m, MultiHeadAttention)]
        width = attention[0].num_heads * attention[0].head_dim if attention else 0
        return flops_per_token(self.matmul_params, len(attention), seq_len, width)

    @cached_property
    def matmul_params(self) -> int:
        return matmul_params(self)

    def token_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Drop the columns of a vocabulary padded past the tokenizer's (vocab_multiple): they are never predicted."""
        vocab = self.tokenizer_vocab_size
        return logits if logits.size(-1) == vocab else logits[..., :vocab]

    def loss_terms(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed next-token cross-entropy and number of correct top-1 predictions over real targets (see
        lmplay.loss.next_token_loss); an idea's own loss overrides this. A loss term of the idea's own beside the
        cross-entropy (a z-loss, MoE load balancing) goes third, summed: it trains, and the recorded loss stays the
        cross-entropy the baseline's is (lmplay.loss.split_terms)."""
        return next_token_loss(self(inputs), targets, self.tokenizer_vocab_size, self.fused_loss)

    def train_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss over the prompts' tokens (backward-able) and its stats; the Python-API way to train on text.
        A text longer than the context continues in more samples of the batch, as rows batching does: every
        token of it is a target once."""
        eot, width = self.tokenizer.eot_id, self.context_len
        rows = [np.array(seq[start:start + width + 1]) for ids in self._tokenize_batch(prompts)
                for seq in ([eot, *ids, eot],) for start in range(0, len(seq) - 1, width)]
        batch = collate([(row, np.ones(len(row), dtype=bool)) for row in rows], eot).to(self.device)
        num_tokens = batch.num_tokens
        loss_sum, correct, aux = split_terms(self.loss_terms(batch.inputs, batch.targets), type(self).__name__)
        loss = loss_sum / num_tokens  # the stats' loss is the cross-entropy; the one returned trains with any aux
        return (loss if aux is None else (loss_sum + aux) / num_tokens), {
            "loss": loss.item(), "accuracy": correct.item() / num_tokens, "tokens": num_tokens}

    def generate_prompts(self, prompts: Sequence[str], max_new_tokens: int = 64, temperature: float = 1.0,
                         do_sample: bool = False, *, top_k: int | None = None, top_p: float = 1.0,
                         repetition_penalty: float = 1.0, use_cache: bool = True, stop_at_eot: bool = True,
                         seed: int | None = None) -> list[str]:
        """Continue each prompt (greedy unless do_sample); returns the new text of each.

        The prompts run as one left-padded batch through the KV-cached decode loop of `lmplay.generation`;
        `seed` makes sampling repeatable.
        """
        max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty, use_cache, stop_at_eot, seed = (
            v.item() if isinstance(v, np.generic) else v for v in (  # np.arange's values, in a notebook's sweep
                max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty, use_cache, stop_at_eot, seed))
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                  top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                                  use_cache=use_cache, stop_at_eot=stop_at_eot)
        check_seed(seed)
        chosen = {"temperature": temperature != 1.0, "top_k": top_k is not None, "top_p": top_p != 1.0,
                  "seed": seed is not None}
        if (note := config.unread(key for key, set_ in chosen.items() if set_)) is not None:
            notice(note)
        generator = None
        if seed is not None:
            generator = torch.Generator(self.device).manual_seed(seed)
        return generate_text(self, prompts, config, generator=generator)
