"""A checkpoint back into a model: its experiment name picks the code from the registry, never the file."""

from pathlib import Path
from typing import Any

import torch

from lmplay.errors import ConfigError
from lmplay.model import LMBase
from lmplay.runner import checkpoint, get_runner


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[LMBase, str]:
    """The checkpoint's model on `device`, in eval mode, and its experiment name."""
    return model_of(checkpoint.load(path), path, device)  # load checks the layout: an experiment name and a model


def model_of(ckpt: dict[str, Any], path: Path | str, device: torch.device | str = "cpu") -> tuple[LMBase, str]:
    """The model of a loaded checkpoint (read from `path`), as load_model gives it."""
    exp, model_args = ckpt["exp"], ckpt["components"]["model"]
    state_args, weights = model_args["state_args"], model_args["state"]["weights"]
    runner = get_runner(exp)
    try:
        model = runner.build_model(**state_args)
    except TypeError as e:
        raise ConfigError(f"checkpoint {path} does not fit the installed code of experiment '{exp}' ({e})") from None
    checkpoint.load_weights(model, weights, f"checkpoint {path}: the weights of experiment '{exp}'")
    return model.to(device).eval(), exp
