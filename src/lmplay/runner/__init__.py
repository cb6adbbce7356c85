"""The runner: five components, checkpoints, the training loop, and the experiment registry."""

from lmplay.runner.base import LMRunnerBase
from lmplay.runner.basic import BasicModelRunner
from lmplay.runner.registry import expose_runner, get_runner, registered

__all__ = ["LMRunnerBase", "BasicModelRunner", "expose_runner", "get_runner", "registered"]
