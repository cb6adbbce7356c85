"""A checkpoint back into a model: its experiment name picks the code from the registry, never the file."""

from pathlib import Path

import torch

from lmplay.errors import ConfigError
from lmplay.model import LMBase
from lmplay.runner import checkpoint, get_runner


def model_part(ckpt: dict, path: Path | str) -> tuple[str, dict, dict]:
    """The experiment name, construction arguments and weights of a checkpoint, or one clear error."""
    exp = ckpt.get("exp")
    model = ckpt.get("components", {}).get("model", {})
    state_args, weights = model.get("state_args"), model.get("state", {}).get("weights")
    if not isinstance(exp, str) or not isinstance(state_args, dict) or not isinstance(weights, dict):
        raise ConfigError(f"checkpoint {path} holds no model (no experiment name, model arguments or weights)")
    return exp, state_args, weights


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[LMBase, str]:
    """The checkpoint's model on `device`, in eval mode, and its experiment name."""
    exp, state_args, weights = model_part(checkpoint.load(path), path)
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
