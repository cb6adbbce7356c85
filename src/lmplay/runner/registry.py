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
from lmplay.runner.component_base import subclass_named

ENTRY_POINT_GROUP = "lmplay.experiments"
BASELINE = "experiments.gpt2ish.versions"  # discovered first: the first to register a name keeps it


Factory = Callable[[dict | None], BasicModelRunner]


@dataclass(frozen=True)
class Registration:
    name: str
    description: str
    factory: Factory

    @property
    def model_class(self) -> type:
        """The class the version builds (read from its runner, which builds no model)."""
        return self.factory(None).model_class

    @property
    def version_args(self) -> dict:
        """The arguments the version builds its model with in Python (get_runner(name).build_model())."""
        return self.factory(None).overrides


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


def defined_at(factory: Callable | type) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def discover(warn: bool = True) -> None:
    """Import every `experiments.<pkg>.versions` and each module named by an `lmplay.experiments` entry point.

    A package that fails to import (an idea half-written) is skipped with a warning naming it (`warn`): the
    others, and every checkpoint of theirs, stay usable."""
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
                skip(module, e, warn)
        except Exception as e:  # noqa: BLE001 - whatever an experiment's code raises on import
            skip(module, e, warn)


def skip(module: str, error: Exception, warn: bool) -> None:
    _BROKEN[module] = f"{type(error).__name__}: {error}{moved_layer(error)}"
    if warn:
        print(f"warning: {module} cannot be imported ({_BROKEN[module]}); its experiments are not registered",
              file=sys.stderr)


def registered(warn: bool = True) -> dict[str, Registration]:
    discover(warn)
    return dict(_REGISTRY)


def names(model_class: str, cls: type) -> bool:
    """Whether a dotted path (as a checkpoint's config names a class) names `cls`: its own path, or a package's
    re-export of it, found among the modules imported already (never importing one a checkpoint names)."""
    return defined_at(cls) == model_class or subclass_named(model_class, object) is cls


def versions_of(model_class: str, runners: dict[str, Registration]) -> list[str]:
    """The registered versions whose model is `model_class`."""
    return [name for name in sorted(runners) if names(model_class, runners[name].model_class)]


def check_trained_class(name: str, model_class: type, resumed_as: str | None = None) -> None:
    """`exp=test_runner model._target_=...ValueNormGPT`, or an exp file pointed at a class its versions.py does not
    register: the checkpoint names test_runner, and loading it as test_runner's class ran the baseline's code on the
    idea's weights (silently, where the idea adds no parameter). A run trained so before this was refused resumes
    as it was (`resumed_as`, its checkpoint's class): its checkpoints load as that class (get_runner). Quiet about
    other packages' import errors: a half-written idea beside the one trained warned on every run."""
    runners = registered(warn=False)
    if name not in runners or (own := runners[name].model_class) is model_class or \
            resumed_as is not None and names(resumed_as, model_class):
        return
    trains_it = versions_of(defined_at(model_class), runners)
    fix = (f"train it as a version of its own, exp={' or '.join(trains_it)}" if trains_it else
           "make it an experiment of its own (python -m lmplay.new_exp NAME, with the class in its model.py)")
    raise ConfigError(f"model._target_={defined_at(model_class)} is not the class experiment '{name}' is registered "
                      f"with ({defined_at(own)}), as which its checkpoints would load: {fix}, or make the exp file's "
                      f"_target_ and its versions.py agree")


def unregistered_note(name: str, model_class: type) -> str | None:
    """A note where no version registers the class a run trains: it trains, and then lmplay.generate and load_model,
    which find a checkpoint's code through the registry, refused its checkpoints."""
    if versions_of(defined_at(model_class), registered(warn=False)):
        return None
    return (f"note: no experiment registers {defined_at(model_class)} (a versions.py with @expose_runner('{name}')): "
            f"this run trains, but lmplay.generate and load_model cannot load its checkpoints until one does")


def version_shape_note(name: str, built: dict, typed: set[str]) -> str | None:
    """A note where the arguments version `name` builds in Python (its versions.py) differ from those its exp file
    trained (`built`, the model's construction_args; the model keys `typed` on the command line left out): a copy's
    two copies of its shape, edited in one place, gave get_runner(name).build_model() another model than training."""
    runners = registered(warn=False)
    if name not in runners:
        return None
    version = runners[name].version_args
    differ = [key for key in version if key in built and version[key] != built[key] and key not in typed]
    if not differ:
        return None
    said = ", ".join(f"{key}={version[key]!r} (trained: {built[key]!r})" for key in differ)
    return (f"note: {runners[name].factory.__module__} builds '{name}' with {said}: get_runner('{name}').build_model() "
            f"gives another model than its exp file ({name}.yaml) trains; make the two agree")


def renamed_to(model_class: str | None, name: str, runners: dict[str, Registration]) -> str | None:
    """The version to load a checkpoint of `model_class` as, where its experiment's model.py renamed the class, or
    the experiment's package was renamed (edits of its code like any other: a resume trains on). A renamed class:
    the module no longer has it, and `name`'s class (or, for a config of one's own, the one class that versions
    register from that module) lives there now. A renamed package: no package registered the module (never imported
    here: a checkpoint names no code to run), and `name`'s class has the checkpoint's class name."""
    module, _, class_name = (model_class or "").rpartition(".")
    if not module or module in sys.modules and hasattr(sys.modules[module], class_name):
        return None
    if module not in sys.modules:
        package = module.rpartition(".")[0]
        moved = name in runners and runners[name].model_class.__name__ == class_name
        return name if moved and not any(m.rpartition(".")[0] == package for m in _BROKEN) else None
    if name in runners:
        return name if runners[name].model_class.__module__ == module else None
    in_module = {v: runners[v].model_class for v in sorted(runners) if runners[v].model_class.__module__ == module}
    return next(iter(in_module)) if len(set(in_module.values())) == 1 else None


def get_runner(name: str, overrides: dict | None = None, model_class: str | None = None) -> BasicModelRunner:
    """The runner of version `name`. A name no version has, with the model class its checkpoint's config names
    (`model_class`, a dotted path): the runner of a registered version of that class. An experiment config of the
    user's own (--config-dir, hydra.searchpath) is a new name over a registered class; the checkpoint's own
    arguments give the shape, and the code still comes from the registry, never from the checkpoint."""
    if not isinstance(name, str):
        raise ConfigError(f"name={name!r} should be an experiment's name (a string), like 'gpt2ish'")
    runners = registered()
    if name in runners:
        runner = runners[name].factory(overrides)
        if not model_class or names(model_class, runner.model_class):
            return runner
    if model_class and (trained_as := versions_of(model_class, runners)):  # a config of one's own, or a version
        return runners[trained_as[0]].factory(overrides)  # trained with model._target_ (before that was refused)
    if (version := renamed_to(model_class, name, runners)) is not None:
        now = runners[version].factory(overrides)
        print(f"note: this checkpoint of experiment '{name}' was trained as {model_class}, which is no longer there "
              f"(renamed): it loads as {defined_at(now.model_class)}, as a resumed run trains it",
              file=sys.stderr)
        return now
    if name in runners:
        raise ConfigError(f"this checkpoint of experiment '{name}' was trained as {model_class}, not as the class "
                          f"'{name}' is registered with ({defined_at(runners[name].model_class)}), "
                          f"and no registered version has that class: loading it as '{name}' would run other code "
                          f"on its weights")
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
                      f"registers it; in Python, importing its versions module also does; an experiment renamed "
                      f"since samples with generate's load_as=NEW_NAME); registered: "
                      f"{', '.join(sorted(runners))}"
                      + "".join(f"; {m} cannot be imported ({why})" for m, why in _BROKEN.items()))
