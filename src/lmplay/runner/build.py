"""A runner composed in this process from overrides, before its set-up: what the tests and the benchmarks build
on, in dirs of their own. Training a run is `python -m lmplay.train`'s: it holds the run dir, checks it and the
settings, resumes it and labels it (.hydra/), which a runner alone does not."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from lmplay.overrides import composed
from lmplay.runner.base import LMRunnerBase
from lmplay.runner.components import config_class


def runner_from_overrides(overrides: list[str], run_dir: Path | str, overridden: set[str]) -> LMRunnerBase:
    """The runner of these overrides over `run_dir`, as lmplay.train makes it, before `.setup(ckpt)`; `overridden`
    are the keys that win over a checkpoint, as typed ones do."""
    cfg = composed("config", overrides, with_hydra=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the task sees its config, Hydra's own lives in HydraConfig
    return LMRunnerBase(cfg, Path(run_dir), config_class(cfg, "model"), overridden)
