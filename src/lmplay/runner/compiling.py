"""compile=true: torch.compile with the run's `compile_options` passed on to inductor, checked before the first
step (a misspelled option or a mode given as options fails here in one line, not minutes into compiling)."""

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lmplay.config import flatten
from lmplay.errors import ConfigError


def compile_options(cfg: DictConfig) -> dict[str, Any]:
    """`compile_options` with nested keys joined by dots, as inductor names them: both
    `compile_options={triton.cudagraphs: true}` and `+compile_options.triton.cudagraphs=true` work."""
    options = cfg.compile_options
    if options is not None and not isinstance(options, DictConfig):  # compile_options=max-autotune: a mode
        raise ConfigError(f"compile_options={options} should be a mapping of inductor options, e.g. "
                          f"compile_options={{max_autotune: true}}")
    return flatten(OmegaConf.to_container(options, resolve=True)) if options is not None else {}


def torch_compiled(fn: Callable, cfg: DictConfig) -> Callable | None:
    """torch.compile(fn) with compile=true (else None), passing `compile_options` on to inductor (e.g.
    coordinate_descent_tuning: 2.5% more tokens/s for gpt2ish on an H200, for ~2 more minutes of compiling)."""
    options = compile_options(cfg)
    if not cfg.compile:
        if options:
            raise ConfigError(f"compile_options={options} need compile=true; add compile=true or drop them")
        return None
    if options:
        from torch._inductor import list_options  # here: a second or so of start-up
        if unknown := sorted(set(options) - set(list_options())):
            raise ConfigError(f"compile_options.{unknown[0]} is not an inductor option of torch "
                              f"{torch.__version__}; torch._inductor.list_options() lists them")
    try:
        return torch.compile(fn, options=options or None)
    except RuntimeError as e:  # "Unexpected type of attr max_autotune, got str should be bool"
        if "Unexpected type of attr" not in str(e):
            raise
        raise ConfigError(f"compile_options: {str(e).splitlines()[0]}") from None
