"""The experiment registry: version name -> runner factory, filled by `@expose_runner`.

A checkpoint names its experiment; the class to rebuild it comes from here, never from the file.
"""

import importlib
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from lmplay.errors import ConfigError
from lmplay.modules import moved_layer
from lmplay.runner.basic import BasicModelRunner

ENTRY_POINT_GROUP = "lmplay.experiments"
BASELINE = "experiments.gpt2ish.versions"  # discovered first: the first to register a name keeps it


Factory = Callable[[dict | None], BasicModelRunner]


@dataclass(frozen=True)
class Registration:
    name: str
    description: str
    factory: Factory


_REGISTRY: dict[str, Registration] = {}
_BROKEN: dict[str, str] = {}  # module -> why it could not be imported (its experiments are not registered)


def expose_runner(name: str, description: str = "") -> Callable[[Factory], Factory]:
    """Register a version: `@expose_runner("gpt2ish")` on a function `(overrides=None) -> BasicModelRunner`.
    A name another module registered is refused: a notebook's `@expose_runner("test_runner")` made every
    test_runner checkpoint load as its class."""
    if not isinstance(name, str):  # `@expose_runner` without the name registered nothing, silently
        raise TypeError("expose_runner takes the version's name first: @expose_runner(\"my_idea\")")

    def register(factory: Factory) -> Factory:
        held = _REGISTRY.get(name)
        if held is not None and defined_at(held.factory) != defined_at(factory):  # the same function again: a re-run cell
            raise ConfigError(f"experiment '{name}' is registered already, by {defined_at(held.factory)}; give "
                              f"{defined_at(factory)} another name")
        _REGISTRY[name] = Registration(name, description, factory)
        return factory
    return register


def defined_at(factory: Callable) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def discover() -> None:
    """Import every `experiments.<pkg>.versions` and each module named by an `lmplay.experiments` entry point.

    A package that fails to import (an idea half-written) is skipped with a warning naming it: the others,
    and every checkpoint of theirs, stay usable."""
    try:
        import experiments
    except ModuleNotFoundError:
        modules = []
    else:
        modules = sorted((f"experiments.{info.name}.versions" for info in pkgutil.iter_modules(experiments.__path__)
                          if info.ispkg), key=lambda m: m != BASELINE)  # the baseline first: a copy that kept its
        # version names is the one refused, never the baseline (the first to register a name keeps it)
    for module in [*modules, *(ep.value for ep in entry_points(group=ENTRY_POINT_GROUP))]:
        if module in _BROKEN:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a package without versions.py exposes nothing; one whose imports fail is broken
                skip(module, e)
        except Exception as e:  # noqa: BLE001 - whatever an experiment's code raises on import
            skip(module, e)


def skip(module: str, error: Exception) -> None:
    _BROKEN[module] = f"{type(error).__name__}: {error}{moved_layer(error)}"
    print(f"warning: {module} cannot be imported ({_BROKEN[module]}); its experiments are not registered",
          file=sys.stderr)


def registered() -> dict[str, Registration]:
    discover()
    return dict(_REGISTRY)


def get_runner(name: str, overrides: dict | None = None, model_class: str | None = None) -> BasicModelRunner:
    """The runner of version `name`. A name no version has, with the model class its checkpoint's config names
    (`model_class`, a dotted path): the runner of a registered version of that class. An experiment config of the
    user's own (--config-dir, hydra.searchpath) is a new name over a registered class; the checkpoint's own
    arguments give the shape, and the code still comes from the registry, never from the checkpoint."""
    runners = registered()
    if name in runners:
        return runners[name].factory(overrides)
    for version in sorted(runners):
        runner = runners[version].factory(overrides)
        if model_class and f"{runner.model_class.__module__}.{runner.model_class.__qualname__}" == model_class:
            return runner
    package = (model_class or "").rpartition(".")[0].rpartition(".")[0]  # experiments.lradd of ...lradd.model.X
    broken = next((m for m in _BROKEN if package and m.rpartition(".")[0] == package), None)
    if broken is not None:  # its versions.py is there: registering it failed, and an install would not help
        raise ConfigError(f"experiment '{name}' ({model_class}) cannot be loaded: {broken} cannot be imported "
                          f"({_BROKEN[broken]}); fix that import")
    raise ConfigError(f"experiment '{name}' is not registered, and no registered version has its model class "
                      f"({model_class or 'not named'}): no experiments/<package>/versions.py and no "
                      f"'{ENTRY_POINT_GROUP}' entry point exposes it (for a package of your own, made with "
                      f"`python -m lmplay.new_exp NAME --into DIR`, run `pip install -e` once on the folder holding "
                      f"the pyproject.toml it wrote, DIR's parent: on PYTHONPATH alone it trains, but only the install "
                      f"registers it; in Python, importing its versions module also does); registered: "
                      f"{', '.join(sorted(runners))}"
                      + "".join(f"; {m} cannot be imported ({why})" for m, why in _BROKEN.items()))
