"""A runner built in this process from overrides, as `python -m lmplay.train` builds it: for a notebook's
experiment, the tests and the benchmarks, which train or time the real runner without a subprocess."""

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from lmplay.overrides import composed
from lmplay.runner.base import LMRunnerBase
from lmplay.runner.components import config_class


def build_runner(overrides: list[str], run_dir: Path, ckpt: dict[str, Any] | None = None,
                 overridden: set[str] = frozenset()) -> LMRunnerBase:
    """A set-up runner over `run_dir` (`ckpt`: a loaded checkpoint to resume from; `overridden`: the keys that win
    over it, as typed ones do). `runner.train()` trains it."""
    cfg = composed("config", overrides, with_hydra=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the task sees its config, Hydra's own lives in HydraConfig
    runner = LMRunnerBase(cfg, run_dir, config_class(cfg, "model"), set(overridden))
    runner.setup(ckpt)
    return runner
