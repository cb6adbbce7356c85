"""What a component's construction raised, said as one line that names the group and the code at fault."""

import traceback
from pathlib import Path

import torch
from hydra.errors import InstantiationException

from lmplay.errors import ConfigError, LmplayError


def rejected_settings(group: str, error: Exception) -> LmplayError:
    """What a config group's target refused to be built with, as one line: Hydra wraps what a `_target_`
    raised (a curriculum's ConfigError comes out as is), and a ValueError (torch's "Invalid learning rate",
    a model's "embed_dim is not divisible by num_heads") names the group and where it was raised."""
    cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
    if isinstance(cause, LmplayError):
        return cause
    said = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__  # not torch's C++ stack
    at, in_own_code = raised_at(cause)
    if in_own_code and not isinstance(cause, (ValueError, AssertionError)):  # a bug of the experiment's own, not
        # its check of a setting (front_mul=0 must be >= 1): `--cfg job` would not help
        return ConfigError(f"the {group}'s code failed: {type(cause).__name__}: {said}{at}; HYDRA_FULL_ERROR=1 shows "
                           f"the traceback")
    return ConfigError(f"the {group} settings were rejected: {said}{at}; see `--cfg job` for the {group} group's "
                       f"keys (HYDRA_FULL_ERROR=1 shows the traceback)")


LIBRARIES = tuple(str(Path(m.__file__).parent) for m in (torch, traceback)) + (str(Path(__file__).parents[1]),)


def raised_at(error: BaseException) -> tuple[str, bool]:
    """Where an error was raised, and the line of the user's own code (an experiment's model.py, by its path) that
    led there: a bug in a model's __init__ named torch's linear.py alone, or a bare "model.py" of many. True where
    the user's own code raised it."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    if not frames:
        return "", False
    own = [f for f in frames if not f.filename.startswith(LIBRARIES) and "site-packages" not in f.filename
           and "<" not in f.filename]
    last = frames[-1]
    if own and own[-1] is last:
        return f" (raised at {last.filename}:{last.lineno})", True
    at = f"{last.filename}:{last.lineno}"
    if own:
        at = f"{Path(last.filename).name}:{last.lineno}, from {own[-1].filename}:{own[-1].lineno}"
    return f" (raised at {at})", False
