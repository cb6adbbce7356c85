"""BasicModelRunner: the runner for ordinary models, as a registered version sees it."""

import inspect
import sys
import types
import typing
from typing import Any

from lmplay.config import RUN_SET_MODEL_KEYS, check_kind
from lmplay.data.tokenizers import get_tokenizer
from lmplay.errors import ConfigError
from lmplay.model import LMBase


class BasicModelRunner:
    """Pairs a model class with a version's construction arguments: its shape, tokenizer and context, as its
    conf/exp/<name>.yaml trains it (tests/test_config.py keeps the two equal for lmplay's own; a fresh run of a
    copy whose two differ says so).

    Training builds the model from the Hydra config; this pairing is what turns a checkpoint's
    experiment name back into code, and what Python users call to get a version's model.
    """

    def __init__(self, model_class: type[LMBase], overrides: dict[str, Any] | None = None) -> None:
        self.model_class = model_class
        self.overrides = dict(overrides or {})

    def build_model(self, **args: Any) -> LMBase:
        """The version's model, freshly initialised; `args` (vocab_size, tokenizer, context_len, ...) win over
        the version's own. vocab_size defaults to the tokenizer's (training pads it with vocab_multiple > 1)."""
        args = {**self.overrides, **args}
        check_model_args(self.model_class, args)  # as the commands check them: num_blocks=-1 built a model of none
        context_len = args.get("context_len", 1)
        check_kind("context_len", context_len, int)
        if context_len < 1:
            raise ConfigError(f"context_len={context_len} must be >= 1")
        if "vocab_size" not in args:
            declared = inspect.signature(self.model_class).parameters.get("tokenizer")
            tokenizer = args.get("tokenizer", declared.default if declared else inspect.Parameter.empty)
            if tokenizer is inspect.Parameter.empty:
                raise ConfigError(f"{self.model_class.__name__} names no default tokenizer: pass tokenizer= (or "
                                  f"vocab_size=) to build_model")
            args["vocab_size"] = get_tokenizer(tokenizer).vocab_size
        model = self.model_class(**args)
        check_args_kept(model, args)  # save_model would write a checkpoint without it
        return model


def check_model_args(model_class: type, args: dict[str, Any]) -> None:
    """A model's int/float/bool arguments (or Optional ones) are of their annotated kind, and no count is negative:
    `num_cells=-5` was torch's traceback from deep in the model, `front_mul=1.5` for an int a TypeError. The
    arguments the run passes (tokenizer, context_len, vocab_size) are checked where they are typed."""
    for name, value in args.items():
        kind, nullable = annotated_kind(model_class, name)
        if kind is None or name in RUN_SET_MODEL_KEYS:
            continue
        check_kind(f"model.{name}", value, kind, nullable=nullable)
        if kind is int and value is not None and value < 0:
            raise ConfigError(f"model.{name}={value} must be >= 0")


def check_args_kept(model: LMBase, args: dict[str, Any]) -> None:
    """Every argument the model was built with is in its `construction_args`, which a checkpoint keeps: one that an
    idea adds to its copy's __init__ and does not pass on to super().__init__ was left out, and generate and a
    resume rebuilt the model with its default, silently (a GEGLU run sampled as SwiGLU)."""
    unkept = [key for key in args if key not in model.construction_args]
    if unkept:
        them = "it" if len(unkept) == 1 else "them"
        raise ConfigError(f"{type(model).__name__}.__init__ takes {', '.join(unkept)} but does not pass {them} on to "
                          f"super().__init__(...), which keeps a model's arguments in its checkpoints (generate and a "
                          f"resume rebuild it from them); add {', '.join(f'{k}={k}' for k in unkept)} to that call")


def annotated_kind(model_class: type, name: str,
                   kinds: tuple[type, ...] = (int, float, bool)) -> tuple[type | None, bool]:
    """(the one of `kinds` a constructor parameter's annotation names, whether None is allowed), or (None, whether
    None is allowed) for any other annotation, or (None, False) for one that does not resolve (`from __future__
    import annotations` naming a type imported only for type checkers). Models' and optimizers' classes alike."""
    parameter = inspect.signature(model_class).parameters.get(name)
    annotation = parameter.annotation if parameter is not None else None
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, vars(sys.modules[model_class.__module__]), {})  # the class's own source
        except Exception:  # noqa: BLE001 - text, resolved as typing.get_type_hints would
            return None, False
    members = set(typing.get_args(annotation)) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else {annotation}
    declared = members - {type(None)}
    if len(declared) == 1 and (kind := declared.pop()) in kinds:
        return kind, type(None) in members
    return None, type(None) in members
