"""Tokenizers: `gpt2` (tiktoken, built offline from the bundled BPE ranks) and `bytes` (UTF-8 bytes).

Both reserve one special id, `eot_id`, that is at once BOS, EOS and padding, as in GPT-2. `encode` never
produces it from text: a literal "<|endoftext|>" inside a document is ordinary text, so only the data
framing decides where documents start and end.
"""

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources

import numpy as np
import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import r50k_pat_str

from lmplay.errors import ConfigError

GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
ENDOFTEXT = "<|endoftext|>"


class Tokenizer:
    """What the data layer and the models need from a tokenizer.

    `token_bytes[i]` is the UTF-8 byte length of token i (0 for `eot_id`): it maps text offsets to token
    offsets without decoding, which is how sentence boundaries are found in token space.
    """

    name: str
    vocab_size: int
    eot_id: int
    token_bytes: np.ndarray

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"


class TiktokenGPT2(Tokenizer):
    """GPT-2's BPE through tiktoken, from `data/assets/gpt2.tiktoken` (no network needed)."""

    def __init__(self) -> None:
        ranks_file = resources.files("lmplay.data") / "assets" / "gpt2.tiktoken"
        digest = hashlib.sha256(ranks_file.read_bytes()).hexdigest()
        if digest != GPT2_RANKS_SHA256:
            raise ConfigError(f"tokenizer file {ranks_file} is corrupt (sha256 {digest[:12]}..., expected "
                              f"{GPT2_RANKS_SHA256[:12]}...); reinstall lmplay or use tokenizer=bytes")
        ranks = tiktoken.load.load_tiktoken_bpe(str(ranks_file), expected_hash=GPT2_RANKS_SHA256)
        self.encoding = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                          special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)
        self.name, self.vocab_size, self.eot_id = "gpt2", self.encoding.n_vocab, self.encoding.eot_token
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for token, rank in ranks.items():
            lengths[rank] = len(token)
        self.token_bytes = lengths

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode([int(i) for i in ids])


class ByteTokenizer(Tokenizer):
    """The UTF-8 bytes of the text (ids 0-255) plus eot = 256: tiny embedding tables, fast on CPUs,
    character-level on ASCII. Decoding replaces invalid UTF-8 (e.g. a character cut by the context) with U+FFFD."""

    def __init__(self) -> None:
        self.name, self.vocab_size, self.eot_id = "bytes", 257, 256
        self.token_bytes = np.ones(self.vocab_size, dtype=np.int64)
        self.token_bytes[self.eot_id] = 0

    def encode(self, text: str) -> list[int]:
        """Bytes that are not UTF-8 in a command line's text (Python holds them as surrogates) are those bytes
        again; any other lone surrogate (a JSON escape) becomes '?'."""
        try:
            return list(text.encode("utf-8", errors="surrogateescape"))
        except UnicodeEncodeError:
            return list(text.encode("utf-8", errors="replace"))

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes between eot ids are decoded; each eot is shown as "<|endoftext|>", as tiktoken does for gpt2."""
        out, run = [], bytearray()
        for i in ids:
            i = int(i)
            if i == self.eot_id:
                out += [run.decode("utf-8", errors="replace"), ENDOFTEXT]
                run = bytearray()
            else:
                run.append(i)
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


TOKENIZERS = {"gpt2": TiktokenGPT2, "bytes": ByteTokenizer}


@functools.cache
def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name`, built once per process (gpt2's tables take ~0.5 s to build)."""
    if name not in TOKENIZERS:
        raise ConfigError(f"tokenizer={name!r} is unknown; use one of: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]()
