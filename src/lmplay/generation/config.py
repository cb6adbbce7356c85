"""What to generate and how each next token is picked, checked once up front so bad values fail fast."""

import math
from collections.abc import Iterable
from dataclasses import dataclass

from lmplay.config import check_kind
from lmplay.errors import ConfigError


def _check_number(name: str, value: object, integer: bool = False, allow_none: bool = False) -> None:
    check_kind(name, value, int if integer else float, nullable=allow_none)
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{name}={value} should be a finite number")


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy decoding unless `do_sample`; sampling applies, in this order (as Hugging Face does):
    repetition penalty, temperature, top-k, top-p. The repetition penalty also applies to greedy decoding.

    `temperature=0` means greedy even with `do_sample`, the usual convention.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    use_cache: bool = True
    stop_at_eot: bool = True

    def __post_init__(self) -> None:
        _check_number("max_new_tokens", self.max_new_tokens, integer=True)
        _check_number("temperature", self.temperature)
        _check_number("top_k", self.top_k, integer=True, allow_none=True)
        _check_number("top_p", self.top_p)
        _check_number("repetition_penalty", self.repetition_penalty)
        for name in ("do_sample", "use_cache", "stop_at_eot"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} should be true or false")
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 0")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature} must be >= 0 (0 = greedy, 1 = the model's own "
                              f"distribution)")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} must be >= 1 (or null to keep every token)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1] (1.0 keeps every token)")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty={self.repetition_penalty} must be > 0 (1.0 = off, > 1 "
                              f"discourages repeats)")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def unread(self, chosen: Iterable[str]) -> str | None:
        """A note when settings only sampling reads (of `chosen`) meet do_sample=false, as Hugging Face's generate
        warns: `generate_prompts(p, 50, 0.8)` reads like sampling at 0.8 and decodes greedily."""
        why = "do_sample=false" if not self.do_sample else "temperature=0" if self.temperature == 0 else None
        unread = [key for key in chosen if key in SAMPLING_KEYS and (why, key) != ("temperature=0", "temperature")]
        if why is None or not unread:
            return None
        fix = "do_sample=true samples" if why == "do_sample=false" else "a temperature above 0 samples"
        return (f"{why} decodes greedily, so {', '.join(unread)} {'has' if len(unread) == 1 else 'have'} no effect; "
                f"{fix} with {'it' if len(unread) == 1 else 'them'}")


SAMPLING_KEYS = ("temperature", "top_k", "top_p", "seed")  # what greedy decoding never reads
