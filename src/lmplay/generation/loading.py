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
    runner = get_runner(exp, model_class=checkpoint.model_class(ckpt))
    what = f"checkpoint {path}: the weights of experiment '{exp}'"
    with torch.device("meta"):  # first without memory: arguments that would need terabytes fail here, not in malloc
        shapes = {name: t.shape for name, t in build(runner, state_args, path, exp).state_dict().items()}
    wrong = [f"{name} {list(w.shape)} for {list(shapes[name])}" for name, w in weights.items()
             if name in shapes and w.shape != shapes[name]]
    if wrong:
        raise ConfigError(f"{what} do not fit its arguments ({'; '.join(wrong[:2])}): a damaged checkpoint")
    model = build(runner, state_args, path, exp)
    checkpoint.load_weights(model, weights, what)
    return model.to(device).eval(), exp


def build(runner: Any, state_args: dict[str, Any], path: Path | str, exp: str) -> LMBase:
    """The model its checkpoint's arguments describe; arguments the installed code refuses are one line."""
    try:
        return runner.build_model(**state_args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"checkpoint {path} does not fit the installed code of experiment '{exp}' "
                          f"({type(e).__name__}: {e})") from None
