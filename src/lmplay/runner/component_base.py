"""The component contract: each of the runner's five parts advertises its parameters, is constructed
from config + checkpoint, and archives itself into the checkpoint.

Values merge as: config defaults < checkpoint state_args < what the user typed on this command line.
"""

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigIndexError, ConfigKeyError, ConfigTypeError

from lmplay.config import CONF_DIR, number_as_text_hint
from lmplay.errors import ConfigError
from lmplay.runner.checkpoint import damaged

# "chosen group": a key of a group chosen on the command line (`optimizer=sgd`): it wins over the checkpoint as a
# typed key does, but the user typed the group's name, not the value
SOURCES = ("command line", "chosen group", "checkpoint", "config")


@dataclass
class Provenance:
    """Where each non-default value of a component came from, for the compact start-of-run report."""

    values: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SOURCES})

    def add(self, group: str, key: str, value: Any, source: str, was: Any = None) -> None:
        """`was`: the checkpoint's value that a typed one replaces, shown beside it."""
        def shown(v: Any) -> Any:  # as YAML and the command line write it: true, null
            if isinstance(v, bool) or v is None:
                return override_text(v)
            return v if not isinstance(v, (list, dict)) or len(repr(v)) < 40 else "[...]"
        item = f"{group}.{key}={shown(value)}" if group else f"{key}={shown(value)}"
        if was is not None and shown(value) == shown(was) == "[...]":  # two long values: where they differ
            changes = changed_paths(was, value, f"{key}.")
            more = f", {len(changes) - 3} more" if len(changes) > 3 else ""
            self.values[source].append(f"{item} ({', '.join(changes[:3])}{more})")
            return
        self.values[source].append(item if was is None else f"{item} (was {shown(was)})")

    def report(self) -> list[str]:
        return [f"  {source + ':':14s}{' '.join(items)}" for source, items in self.values.items() if items]


def typed_choice(group: str) -> str | None:
    """The file typed for a config group (`optimizer=sgd` -> "sgd"), as Hydra chose it; None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def chosen_file_values(group: str) -> dict[str, Any]:
    """The values in lmplay's file of the group's chosen option (`optimizer=adamw`: conf/optimizer/adamw.yaml), as
    written (`${lr}`); {} for a file of one's own (--config-dir), or outside a Hydra job."""
    path = Path(CONF_DIR) / group / f"{typed_choice(group)}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """`stages.0.steps 15 -> none` for each leaf that differs between two config values (lists and dicts)."""
    def leaves(value: Any, at: str) -> dict[str, Any]:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
        if items is None:
            return {at: value}
        return {path: v for k, child in items for path, v in leaves(child, f"{at}{k}.").items()}

    old, new = leaves(before, prefix), leaves(after, prefix)
    return [f"{path.rstrip('.')} {old.get(path, 'none')} -> {new.get(path, 'none')}"
            for path in sorted(old.keys() | new.keys()) if old.get(path, "none") != new.get(path, "none")]


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):  # torch's signatures mix 0 and 0.0 freely
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def same(a: Any, b: Any) -> bool:
    """Equal as config values: a YAML list equals the tuple default it stands for ([0.9, 0.999] and (0.9, 0.999))."""
    return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)


KIND_EXAMPLES = {bool: False, int: 0, float: 0.0, str: ""}  # a value of each kind a parameter may declare


def validate_args(component: str, args: dict[str, Any], schema: dict[str, Any],
                  kinds: dict[str, type] | None = None) -> None:
    """An unknown or ill-typed key is a ConfigError naming the component, the key and the valid keys. `kinds`: the
    kind of a key whose default is None, as its parameter declares it (`fused: bool | None`): any value passed
    there unchecked, and torch read `optimizer.fused=no` as true."""
    for key, value in args.items():
        if key not in schema:
            valid = f"valid keys: {', '.join(sorted(schema))}" if schema else "it takes none"
            raise ConfigError(f"{component}: unknown key '{key}'; {valid}")
        like = KIND_EXAMPLES.get((kinds or {}).get(key)) if schema[key] is None else schema[key]
        if not _type_ok(value, like):
            kind = {"int": "a number" if component in ("optimizer", "scheduler") else "an integer",  # torch's 0 is 0.0
                    "float": "a number", "bool": "true or false", "str": "a string",
                    "list": "a list", "tuple": "a list", "dict": "a mapping"}.get(type(like).__name__, "a value")
            # not "like <default>": the schema's defaults are the class's own (torch's lr=0.001), not the config's
            if schema[key] is None:  # true, false or null
                kind = f"{kind.replace(' or ', ', ')} or null"
            raise ConfigError(f"{component}.{key}={value!r} should be {kind}"
                              f"{number_as_text_hint(f'{component}.{key}', value)}")


IMPORTABLE = ("torch.optim", "lmplay.runner.schedules")  # the modules (and their submodules) a name from a
# checkpoint may import: where optimizers and schedules live, never a command (`torch.utils.model_dump.__main__`)


def override_text(value: Any) -> str:
    """A value as a command-line override writes it, with no space to quote: true, null, [0.9,0.99]."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return f"[{','.join(override_text(v) for v in value)}]"
    if isinstance(value, dict):
        return f"{{{','.join(f'{k}:{override_text(v)}' for k, v in value.items())}}}"
    return str(value)


def without_target(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k != "_target_"}


def subclass_named(target: str, base: type) -> type | None:
    """The class `target` names, if it is a `base`; else None. A name read from a checkpoint or a stage is
    data: only a class of the expected kind is ever built from it, and naming it imports nothing outside
    torch.optim and lmplay's schedules (importing a module runs its code). Another package's class must already be imported,
    as the config's own `_target_` is."""
    module_name, _, name = target.rpartition(".")
    module = sys.modules.get(module_name)
    importable = module_name.startswith(tuple(p + "." for p in IMPORTABLE)) or module_name in IMPORTABLE
    if module is None and importable and "__main__" not in module_name.split("."):
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - a name that imports nothing usable names no class
            return None
    cls = getattr(module, name, None) if module is not None else None
    return cls if isinstance(cls, type) and issubclass(cls, base) else None


class Component:
    """Base of the five components: `name` is its key in the checkpoint, `group` the Hydra config group it reads."""

    name = "component"
    group = "component"
    # keys the report names as the user types them: {key: its top-level name, or None to leave it out}
    reported_as: ClassVar[dict[str, str | None]] = {}

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.args: dict[str, Any] = {}

    def advertise(self) -> dict[str, Any]:
        """The construction parameters and their defaults: the schema its config group fills."""
        raise NotImplementedError

    def kinds(self) -> dict[str, type]:
        """The kinds of the parameters whose default is None, where they declare one (signature_kinds)."""
        return {}

    def construct(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                  state: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def archive(self) -> dict[str, Any]:
        return {"state_args": dict(self.args), "state": {}}

    def kept_target(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                    base: type) -> tuple[str, dict[str, Any]]:
        """The class to build and the config's arguments for it. A resumed run keeps the class it was built with
        unless this command chose the group's file (`optimizer=sgd` stays SGD when a resume does not retype it),
        and then only the keys typed now apply. The checkpoint names the class: it must be a `base`."""
        target = construction_args["_target_"]
        saved = (state_args or {}).get("_target_")
        chosen = self.group in self.runner.overridden or f"{self.group}._target_" in self.runner.overridden
        if saved is None or saved == target or chosen:
            return target, without_target(construction_args)
        cls = subclass_named(saved, base)
        if cls is None and saved.rpartition(".")[0] not in sys.modules and not saved.startswith(IMPORTABLE):
            aliases = self.runner.interpolated_keys(self.group)  # a group chosen anew brings its file's values:
            own = " ".join(  # every setting the run trained with, its aliases' (lr=) and its own (optimizer.momentum=)
                f"{aliases.get(key, f'{self.group}.{key}')}={override_text(value)}"
                for key, value in sorted(state_args.items(), key=lambda kv: (kv[0] not in aliases, kv[0]))
                if key != "_target_")  # false and null too: a file's true would stand for a typed false
            raise ConfigError(f"this run trained with the {self.group} {saved}, whose module a checkpoint does not "
                              f"import by itself (it imports only torch's and lmplay's): choose it again as the run "
                              f"did, {self.group}=NAME (its conf file, with --config-dir DIR) or "
                              f"{self.group}._target_={saved} (with ~{self.group}.KEY for the keys it does not take), "
                              f"with the run's own settings typed too ({own or 'its keys'}): a group chosen anew "
                              f"brings its file's values")
        if cls is None:
            raise damaged("settings", f"its {self.group} {saved!r} is not a {base.__module__}.{base.__qualname__} "
                                      f"that a checkpoint may name ({self.group}=NAME chooses one)")
        print(f"{self.group}: {saved}, as the run was built ({self.group}=NAME chooses another)")
        typed, takes = self.runner.typed_keys(self.group), inspect.signature(cls).parameters
        aliases = self.runner.interpolated_keys(self.group)  # `warmup_fraction: ${warmup_fraction}`
        for key in sorted(k for k in typed if k in aliases and k not in takes):  # typed as a top-level key
            self.runner.unread_keys.add(aliases[key])
            print(f"note: {aliases[key]}={construction_args[key]} changes nothing in this run: its {self.group}, "
                  f"{saved} as the run was built, takes no {key}")
        return saved, {k: v for k, v in construction_args.items() if k in typed and (k in takes or k not in aliases)}

    def report_typed_inside(self, key: str, value: Any, typed: set[str]) -> bool:
        """Report the keys typed inside a value (`curriculum.stages.0.epochs=2`) as typed, rather than the whole
        value under `config:`, and return whether there were any. (Inside a checkpoint's value, `typed_into_saved`
        reports them.)"""
        inside = sorted(path for path in typed if path.startswith(f"{key}."))
        holder = OmegaConf.create({key: value})
        for path in inside:
            self.runner.provenance.add(self.group, path, OmegaConf.select(holder, path), "command line")
        return bool(inside)

    def typed_into_saved(self, merged: dict[str, Any], path: str, construction_args: dict[str, Any]) -> Any:
        """A key typed inside a value the checkpoint keeps (`curriculum.stages.0.epochs=3` on a resume that does not
        retype `curriculum=NAME`), set inside the checkpoint's value: the run keeps its plan, with what was typed."""
        top = path.split(".", 1)[0]
        value = OmegaConf.select(OmegaConf.create(construction_args), path)
        holder = OmegaConf.create({top: merged[top]})
        was = OmegaConf.select(holder, path, default=None)
        try:
            OmegaConf.update(holder, path, value, force_add=True)
        except (ConfigIndexError, ConfigKeyError, ConfigTypeError) as e:
            raise ConfigError(f"{self.group}.{path}={value!r} does not fit this run's {self.group}.{top}, which comes "
                              f"from its checkpoint ({type(e).__name__}: {str(e).splitlines()[0]}); type "
                              f"{self.group}=NAME to choose a whole new one, or fresh=true") from None
        self.runner.provenance.add(self.group, path, value, "command line", was)
        return OmegaConf.to_container(holder)[top]

    def refuse_file_keys(self, construction_args: dict[str, Any], schema: dict[str, Any]) -> None:
        """`optimizer._target_=torch.optim.SGD` alone keeps the keys of the group's composed file (adamw.yaml's betas
        and eps), which the class does not take: `unknown key 'betas'` named a key nobody typed, and not the fix."""
        left = sorted(k for k in construction_args if k not in schema and k not in self.runner.typed_keys(self.group))
        if not left:
            return
        file = f"{choice}.yaml" if (choice := typed_choice(self.group)) else "the default"
        target = OmegaConf.select(self.runner.cfg, f"{self.group}._target_")
        raise ConfigError(f"{self.group}._target_={target} takes no {', '.join(left)}, "
                          f"which the {self.group} file the run composed ({file}) sets: {self.group}._target_ "
                          f"replaces the class alone; type {' '.join(f'~{self.group}.{k}' for k in left)} to drop "
                          f"them, or give the class a file of its own (conf/{self.group}/NAME.yaml) and choose it "
                          f"with {self.group}=NAME")

    def settle(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
               fixed: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Merge config, checkpoint and command line; `fixed` keys (architecture) always come from the checkpoint."""
        if self.group in self.runner.overridden and (choice := typed_choice(self.group)):  # optimizer=sgd: the
            self.runner.provenance.add("", self.group, choice, "command line")  # report's biggest difference
        schema, kinds = self.advertise(), self.kinds()
        if f"{self.group}._target_" in self.runner.overridden and self.group not in self.runner.overridden:
            self.refuse_file_keys(construction_args, schema)
        validate_args(self.group, construction_args, schema, kinds)
        explicit = self.runner.explicit_keys(self.group)
        kept = {k: v for k, v in (state_args or {}).items() if k in schema and k not in explicit}  # typed: replaced
        try:
            validate_args(self.group, kept, schema)
        except ConfigError as e:
            raise damaged("settings", str(e)) from None
        try:
            validate_args(self.group, kept, schema, kinds)
        except ConfigError as e:  # optimizer.fused='no', which torch took for true
            raise ConfigError(f"the checkpoint's {e}: an older lmplay trained with it unchecked; type the key with a "
                              f"good value to replace it") from None
        borrowed = self.runner.interpolated_keys(self.group)  # `lr: ${lr}` in sgd.yaml: the value is the exp's
        merged = {**schema, **construction_args}
        sources = {k: "config" for k in construction_args}
        for key, value in (state_args or {}).items():
            if key not in schema:
                continue
            if key in fixed and key in explicit and construction_args.get(key) != value:
                raise ConfigError(f"{self.group}.{key}={construction_args.get(key)!r} cannot change on resume: "
                                  f"the checkpoint's model has {key}={value!r}; use fresh=true to start over")
            # a class kept from the checkpoint whose lr is its own default still differs from the config's `lr`
            not_the_config = (key in borrowed and key not in construction_args
                              and not same(value, self.runner.cfg.get(borrowed[key])))
            if (key in fixed or key not in explicit) and (value != merged[key] or not_the_config):
                merged[key], sources[key] = value, "checkpoint"
            elif key not in construction_args and type(value) is not type(merged[key]) and same(value, merged[key]):
                merged[key] = value  # the run's 0.0 over a signature's 0: the value as the run's config wrote it
        saved, typed = state_args or {}, self.runner.typed_keys(self.group)
        for path in sorted(k for k in typed if "." in k and sources.get(k.split(".", 1)[0]) == "checkpoint"):
            merged[path.split(".", 1)[0]] = self.typed_into_saved(merged, path, construction_args)
        in_file = chosen_file_values(self.group)  # what the chosen file says, where an exp file said otherwise
        for key in explicit:
            if key in merged and sources.get(key) != "checkpoint":
                edited = any(t.startswith(key + ".") for t in typed)  # the file's, with a key typed inside
                by_config = key in borrowed or key in in_file and not edited and not same(merged[key], in_file[key])
                sources[key] = "command line" if key in typed else "config" if by_config else "chosen group"
        self.record_provenance(merged, sources, saved, schema, typed, explicit)
        self.args = merged
        return merged

    def record_provenance(self, merged: dict[str, Any], sources: dict[str, str], saved: dict[str, Any],
                          schema: dict[str, Any], typed: set[str], explicit: set[str]) -> None:
        """For the start-of-run report: each key typed, or that differs from its default or the checkpoint, and
        where its value came from (`sources`: command line, chosen group, checkpoint or config)."""
        for key, value in merged.items():
            if key not in typed and sources.get(key) != "checkpoint":
                said_inside = self.report_typed_inside(key, value, typed)
                if said_inside and sources[key] == "config":  # a chosen group's value is said too, and how it differs
                    continue
            if key in sources and (key in typed or sources[key] == "checkpoint" or not same(value, schema.get(key))
                                   or (key in saved and not same(saved[key], value))):
                was = saved[key] if key in saved and key in explicit and not same(saved[key], value) else None
                if key not in self.reported_as:
                    self.runner.provenance.add(self.group, key, value, sources[key], was)
                elif self.reported_as[key]:
                    self.runner.provenance.add("", self.reported_as[key], value, sources[key], was)
