"""A checkpoint back into a model (its experiment name picks the code from the registry, never the file), and a
model trained in Python into a checkpoint that the commands read."""

import difflib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lmplay.cli import printable
from lmplay.device import pick_device
from lmplay.errors import ConfigError
from lmplay.files import home_expanded
from lmplay.model import LMBase, all_finite
from lmplay.runner import checkpoint, get_runner, registered
from lmplay.runner.registry import defined_at


def load_model(path: Path | str, device: torch.device | str | None = "cpu",
               load_as: str | None = None) -> tuple[LMBase, str]:
    """The checkpoint's model (a .lmp, or a run dir standing for its model.lmp) on `device` (cpu, cuda, cuda:N, mps,
    as a string or a torch.device, or auto/None: the CLI's device=auto), in eval mode, and its experiment name.
    `load_as`: load it as that registered experiment instead of the one it names, renamed since (the user names
    the code; the checkpoint never does)."""
    if load_as is not None and (not isinstance(load_as, str) or load_as not in registered()):
        near = difflib.get_close_matches(str(load_as), registered(), n=1)
        hint = f": did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"load_as={load_as!r} is not a registered experiment{hint} (load_as loads a checkpoint as a "
                          f"registered experiment's code; registered: {', '.join(sorted(registered()))})")
    device = pick_device(device)
    path = home_expanded(checked_path(path))
    return model_of(checkpoint.load(path, model_only=True), path, device, load_as)  # checked: a name and a model


def save_model(model: LMBase, exp: str, path: Path | str, replace: bool = False) -> Path:
    """Write `model` (its construction arguments and weights) as a checkpoint of registered version `exp`, which
    load_model, `python -m lmplay.generate` and `lmplay.inspect` read. An existing file (a run's checkpoint, with
    its optimizer and progress) is replaced only with `replace=True`: a run's model.lmp is set aside with
    the run's stats in replaced_<time>/, any other file kept as `.bak` (the one before it goes, as a training save's:
    a save every epoch to one path keeps the last two). Where `exp` names another model class, load_model would
    refuse its weights, and a model whose weights are not all finite would train and sample garbage: say so here."""
    if not isinstance(exp, str):
        raise ConfigError(f"exp={exp!r} should be the name of the experiment the model is a version of, like "
                          f"'gpt2ish' (load_model gives it beside the model)")
    model = getattr(model, "_orig_mod", model)  # torch.compile(model)'s wrapper: the model it compiled
    target = f"{type(model).__module__}.{type(model).__qualname__}"
    own = exp not in registered()  # a config of one's own over a registered class, as load_model gave it, saves
    runner = get_runner(exp, model_class=target if own else None)  # under its name; a version's name, as that one
    if type(model) is not runner.model_class:
        raise ConfigError(f"a {type(model).__name__} cannot be saved as experiment '{exp}', whose model is "
                          f"{runner.model_class.__name__}; name the version it is a model of")
    path = home_expanded(checked_path(path))
    checkpoint.check_out(path, replace, asked_by="replace=True", rotate=True)
    if not all_finite(model.parameters()):
        raise ConfigError(f"the model's weights hold NaN or inf, which no checkpoint keeps (a resume would blame its "
                          f"code, generate would sample garbage): {path} was not written")
    typo = own and exp != model.loaded_as  # a name of one's own that load_model gave saves under it
    if typo and (near := difflib.get_close_matches(exp, registered(), n=1, cutoff=0.8)):  # not a typo of a version's
        raise ConfigError(f"experiment '{exp}' is not registered: did you mean '{near[0]}'? (a config of one's own "
                          f"saves under its own name, as load_model gave it)")
    config = OmegaConf.to_yaml({"model": {"_target_": target}}) if own else ""  # own: load_model finds it by class
    checkpoint.write_out({"exp": exp, "config": config, "rng": checkpoint.rng_state(),
                          "components": {"model": checkpoint.model_part(model)}}, path)
    return path


def checked_path(path: Any) -> Path | str:
    """A checkpoint's path, as a string or a Path: another type was pathlib's TypeError."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"path={path!r} should be a checkpoint's path (a string or a pathlib.Path), like "
                          f"'outputs/my_run/model.lmp' (a run's dir stands for its model.lmp)")
    return path


def model_of(ckpt: dict[str, Any], path: Path | str, device: torch.device | str = "cpu",
             load_as: str | None = None) -> tuple[LMBase, str]:
    """The model of a loaded checkpoint (read from `path`), as load_model gives it."""
    exp, model_args = load_as or ckpt["exp"], ckpt["components"]["model"]
    state_args, weights = model_args["state_args"], model_args["state"]["weights"]
    runner = get_runner(exp, model_class=None if load_as else checkpoint.model_class(ckpt))
    other = None
    if exp != ckpt["exp"]:
        print(f"note: {path} is a checkpoint of experiment '{printable(ckpt['exp'])}': its weights load as "
              f"experiment '{exp}' ({defined_at(runner.model_class)}), as load_as asks", file=sys.stderr)
        other = f"the model of experiment '{exp}' (load_as), another than they trained"
    what = f"checkpoint {path}: the weights of experiment '{printable(ckpt['exp'])}'"
    checkpoint.check_weights_fit(lambda: build(runner, state_args, path, exp), state_args, model_args["state"], what,
                                 other_model=other)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: their draws leave the caller's
        model = build(runner, state_args, path, exp)  # random state as it was
    checkpoint.load_weights(model, weights, what)
    if changed := checkpoint.changed_code(model, model_args["state"], other_code=other is not None):
        print(f"note: {', '.join(changed)} changed since {path} was saved: its weights run with the code as it is now",
              file=sys.stderr)
    model.loaded_as = exp
    return model.to(device).eval(), exp


def build(runner: Any, state_args: dict[str, Any], path: Path | str, exp: str) -> LMBase:
    """The model its checkpoint's arguments describe; arguments the installed code refuses are one line."""
    try:
        return runner.build_model(**state_args)
    except ConfigError as e:  # lmplay's own checks of the arguments: the checkpoint's, which no one typed here
        raise ConfigError(f"checkpoint {path} holds model settings the installed code refuses: {e}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        said = str(e).strip().splitlines()[0] if str(e).strip() else ""  # not torch's C++ stack below it
        raise ConfigError(f"checkpoint {path} does not fit the installed code of experiment '{exp}' "
                          f"({type(e).__name__}: {said})") from None
