"""BasicModelRunner: the runner for ordinary models, as a registered version sees it."""

from typing import Any

from lmplay.model import LMBase


class BasicModelRunner:
    """Pairs a model class with a version's construction arguments (e.g. its shape).

    Training builds the model from the Hydra config; this pairing is what turns a checkpoint's
    experiment name back into code, and what Python users call to get a version's model.
    """

    def __init__(self, model_class: type[LMBase], overrides: dict[str, Any] | None = None) -> None:
        self.model_class = model_class
        self.overrides = dict(overrides or {})

    def build_model(self, **args: Any) -> LMBase:
        """The version's model; `args` (vocab_size, tokenizer, context_len, ...) win over the version's own."""
        return self.model_class(**{**self.overrides, **args})
