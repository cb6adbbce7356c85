"""BasicModelRunner: the runner for ordinary models, as a registered version sees it."""

import inspect
from typing import Any

from lmplay.data.tokenizers import get_tokenizer
from lmplay.errors import ConfigError
from lmplay.model import LMBase


class BasicModelRunner:
    """Pairs a model class with a version's construction arguments: its shape, tokenizer and context, as its
    conf/exp/<name>.yaml trains it (tests/test_config.py keeps the two equal).

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
        if "vocab_size" not in args:
            declared = inspect.signature(self.model_class).parameters.get("tokenizer")
            tokenizer = args.get("tokenizer", declared.default if declared else inspect.Parameter.empty)
            if tokenizer is inspect.Parameter.empty:
                raise ConfigError(f"{self.model_class.__name__} names no default tokenizer: pass tokenizer= (or "
                                  f"vocab_size=) to build_model")
            args["vocab_size"] = get_tokenizer(tokenizer).vocab_size
        return self.model_class(**args)
