"""A runner built in this process from overrides, as `python -m lmplay.train` builds it: for a notebook's
experiment, the tests and the benchmarks, which train or time the real runner without a subprocess."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from lmplay.config import override_key
from lmplay.overrides import composed
from lmplay.runner import checkpoint
from lmplay.runner.base import LMRunnerBase
from lmplay.runner.components import config_class


def build_runner(overrides: list[str], run_dir: Path | str) -> LMRunnerBase:
    """A set-up runner over `run_dir`, resumed from its checkpoint as the same command line resumes it (the keys of
    `overrides` win over the checkpoint's; `fresh=true` starts over, the old run set aside); `.train()` trains it."""
    runner = unset_runner(overrides, run_dir, {override_key(o) for o in overrides})
    runner.setup(checkpoint.resumed(runner.run_dir, runner.cfg.fresh))
    return runner


def unset_runner(overrides: list[str], run_dir: Path | str, overridden: set[str]) -> LMRunnerBase:
    """The runner before its set-up (`.setup(ckpt)`): what the tests build on a checkpoint of their making."""
    cfg = composed("config", overrides, with_hydra=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the task sees its config, Hydra's own lives in HydraConfig
    return LMRunnerBase(cfg, Path(run_dir), config_class(cfg, "model"), overridden)
