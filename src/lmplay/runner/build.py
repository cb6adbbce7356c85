"""A runner built in this process from overrides, as `python -m lmplay.train` builds it: for a notebook's
experiment, the tests and the benchmarks, which train or time the real runner without a subprocess."""

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from lmplay.config import override_key
from lmplay.errors import ConfigError
from lmplay.files import CHECKPOINT
from lmplay.overrides import composed
from lmplay.runner.base import LMRunnerBase
from lmplay.runner.components import config_class


def build_runner(overrides: list[str], run_dir: Path | str, ckpt: dict[str, Any] | None = None,
                 overridden: set[str] | None = None) -> LMRunnerBase:
    """A set-up runner over `run_dir`; `runner.train()` trains it. `ckpt`, a loaded checkpoint, resumes: the keys
    `overridden` (default: those of `overrides`) win over it, as typed ones do. A dir that holds a run already is
    refused without it (or `fresh=true`, which sets the old run aside): a second call would train over the first."""
    cfg = composed("config", overrides, with_hydra=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the task sees its config, Hydra's own lives in HydraConfig
    if ckpt is None and not cfg.fresh and (Path(run_dir) / CHECKPOINT).exists():
        raise ConfigError(f"{run_dir} holds a run already: ckpt=lmplay.runner.checkpoint.load('{run_dir}/"
                          f"{CHECKPOINT}') resumes it, and fresh=true among the overrides starts it over (the old run "
                          f"set aside in it)")
    typed = {override_key(o) for o in overrides} if overridden is None else overridden
    runner = LMRunnerBase(cfg, Path(run_dir), config_class(cfg, "model"), set(typed))
    runner.setup(ckpt)
    return runner
