"""The experiment registry: version name -> runner factory, filled by `@expose_runner`.

A checkpoint names its experiment; the class to rebuild it comes from here, never from the file.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from lmplay.errors import ConfigError
from lmplay.runner.basic import BasicModelRunner

ENTRY_POINT_GROUP = "lmplay.experiments"


@dataclass(frozen=True)
class Registration:
    name: str
    description: str
    factory: Callable[..., BasicModelRunner]


_REGISTRY: dict[str, Registration] = {}


def expose_runner(name: str, description: str = "") -> Callable:
    """Register a version: `@expose_runner("gpt2ish")` on a function returning a BasicModelRunner."""
    def register(factory: Callable[..., BasicModelRunner]) -> Callable[..., BasicModelRunner]:
        _REGISTRY[name] = Registration(name, description, factory)
        return factory
    return register


def discover() -> None:
    """Import every `experiments.<pkg>.versions` and each module named by an `lmplay.experiments` entry point."""
    try:
        import experiments
        for info in pkgutil.iter_modules(experiments.__path__):
            if info.ispkg:
                try:
                    importlib.import_module(f"experiments.{info.name}.versions")
                except ModuleNotFoundError as e:
                    if e.name != f"experiments.{info.name}.versions":
                        raise
    except ModuleNotFoundError:
        pass
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value)


def registered() -> dict[str, Registration]:
    discover()
    return dict(_REGISTRY)


def get_runner(name: str, overrides: dict | None = None) -> BasicModelRunner:
    runners = registered()
    if name not in runners:
        raise ConfigError(f"experiment '{name}' is not registered: no experiments/<package>/versions.py and no "
                          f"'{ENTRY_POINT_GROUP}' entry point exposes it (`python -m lmplay.new_exp` prints the entry "
                          f"point for a package of your own); registered: {', '.join(sorted(runners))}")
    return runners[name].factory(overrides)
