"""A checkpoint back into a model: its experiment name picks the code from the registry, never the file."""

from pathlib import Path

import torch

from lmplay.errors import ConfigError
from lmplay.model import LMBase
from lmplay.runner import checkpoint, get_runner


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[LMBase, str]:
    """The checkpoint's model on `device`, in eval mode, and its experiment name."""
    ckpt = checkpoint.load(path)  # its layout checked: an experiment name and a model
    exp, model_args = ckpt["exp"], ckpt["components"]["model"]
    state_args, weights = model_args["state_args"], model_args["state"]["weights"]
    runner = get_runner(exp)
    try:
        model = runner.build_model(**state_args)
    except TypeError as e:
        raise ConfigError(f"checkpoint {path} does not fit the installed code of experiment '{exp}' ({e})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = " ".join(str(e).split("\n")[:2]).strip()
        raise ConfigError(f"checkpoint {path}: its weights do not fit experiment '{exp}' ({first})") from None
    return model.to(device).eval(), exp
