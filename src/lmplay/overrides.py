"""What the command line typed: the checks made before Hydra composes, and the one-line hints for what Hydra refused.

Hydra's own report of a bad override is several lines (and a traceback with HYDRA_FULL_ERROR); lmplay.hydra_app
calls these when Hydra gave up, or before it starts where a mistake would cost a run dir (a sweep of configs of
one's own, a bare word, an unreadable value), so that a mistake is one line naming the key and the fix.
"""

import difflib
import inspect
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lmplay.cli import HYDRA_VALUE_FLAGS, fail, quote, shell_word
from lmplay.config import (CONF_DIR, RUN_SET_MODEL_KEYS, flatten, not_the_models_to_set, number_text, override_value,
                           root_config)
from lmplay.errors import ConfigError


def typed_overrides(argv: list[str]) -> list[str]:
    """The overrides: `key=value` or `~key`; Hydra's own flags (--cfg job, -m) and their values are not."""
    return [a for i, a in enumerate(argv) if not a.startswith("-") and ("=" in a or a.startswith("~"))
            and (i == 0 or argv[i - 1] not in HYDRA_VALUE_FLAGS)]  # not --config-dir's "a=b" dir


def single_runs(overrides: list[str]) -> list[list[str]]:
    """The override lists to compose to check a sweep: each value of each listed or range sweep once (the
    other sweeps at their first value); one list when nothing sweeps. Other sweeps (glob, interval) are
    left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    parsed = list({o.key_or_group: o for o in OverridesParser.create().parse_overrides(overrides)}.values())  # a key
    # twice (an exp file's hydra.sweeper.params, then the command): the last wins, as in Hydra's basic sweeper
    if not any(o.startswith("hydra/sweeper=") for o in overrides):  # Hydra's basic sweeper, which has failed
        for o in parsed:
            if o.value_type == ValueType.INTERVAL_SWEEP:
                fail(f"{o.input_line}: Hydra's basic sweeper takes values (lr=1e-4,3e-4), range() or choice(); "
                     f"interval() is a search space for an optimizing sweeper (hydra/sweeper=optuna, with its plugin)")
    values = {i: [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for i, o in enumerate(parsed)
              if o.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP, ValueType.RANGE_SWEEP)}
    chosen = {i: values[i][0] if i in values else o.input_line for i, o in enumerate(parsed)
              if i in values or not o.is_sweep_override()}
    runs = [list(chosen.values())]
    for i, options in values.items():
        runs += [list({**chosen, i: option}.values()) for option in options[1:]]
    return runs


def listed_globs(overrides: list[str], config_name: str) -> list[str]:
    """A config group swept by glob (`exp=glob(my_*)`) as the list of its options that match, searchpath's too, so
    that the check composes each as Hydra's sweeper will (a glob of one's own exp files skipped the check)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    parsed = OverridesParser.create().parse_overrides(overrides)
    if not any(o.value_type == ValueType.GLOB_CHOICE_SWEEP for o in parsed):
        return overrides
    searchpath = [o for o in overrides if o.lstrip("+").startswith("hydra.searchpath")]
    listed = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        loader = GlobalHydra.instance().config_loader()
        for o in parsed:
            options = loader.get_group_options(o.key_or_group, results_filter=ObjectType.CONFIG,
                                               config_name=config_name, overrides=searchpath) \
                if o.value_type == ValueType.GLOB_CHOICE_SWEEP else []
            matched = o.value().filter(options) if options else []
            listed.append(f"{o.get_key_element()}={','.join(matched)}" if matched else o.input_line)
    return listed


def reject_bare_words(argv: list[str]) -> None:
    """`fresh` or `exp test_runner` (a word that is not key=value, and not the value of a flag such as
    `--cfg job`) in one line: Hydra's parse error is three."""
    for before, arg in zip(["", *argv], argv):
        if "=" not in arg and not arg.startswith(("-", "~")) and before not in HYDRA_VALUE_FLAGS:
            fail(f"{arg!r} is not an override: write key=value, as in fresh=true or exp=gpt2ish")


def with_config_dir(overrides: list[str], config_dir: str | None) -> list[str]:
    """The overrides with --config-dir's folder first in hydra.searchpath, as Hydra searches it: beside a
    searchpath typed too (one override of the key: a second would replace the first)."""
    if not config_dir:
        return overrides
    entry = quote(f"file://{Path(config_dir).resolve()}", always=True)  # quoted: a dir "my conf's", or one ending in \\
    typed = [o for o in overrides if o.startswith("hydra.searchpath=")]
    if not typed:
        return [*overrides, f"hydra.searchpath=[{entry}]"]
    listed = typed[-1].split("=", 1)[1].strip().removeprefix("[").removesuffix("]")
    merged = f"hydra.searchpath=[{entry}{',' + listed if listed.strip() else ''}]"
    return [o for o in overrides if not o.startswith("hydra.searchpath=")] + [merged]


def config_flags(argv: list[str]) -> dict[str, str]:
    """Hydra's --config-dir ("dir"), --config-path ("path": it replaces lmplay's conf/) and --config-name ("name")
    as typed, in any of their spellings: the check composes what the command composes, or it blames a good exp=."""
    found: dict[str, str] = {}
    flags = {"--config-dir": "dir", "-cd": "dir", "--config-path": "path", "-cp": "path", "--config-name": "name",
             "-cn": "name"}
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in flags and (eq or i + 1 < len(argv)):
            found[flags[flag]] = value if eq else argv[i + 1]
    return found


def precheck(overrides: list[str], config_name: str) -> None:
    """Compose the config with Hydra's compose API (each value of a sweep) and exit with one line naming
    what is wrong, if anything."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    # hydra.searchpath stays: it decides which configs exist (an external package's exp=...).
    if any(o.startswith("+") and o.lstrip("+").startswith("hydra.searchpath") for o in overrides):
        fail(PLUS_SEARCHPATH)
    reject_unreadable(overrides)
    reject_list_item_deletion(overrides)
    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra") or o.startswith("hydra.searchpath")]
    try:
        runs = single_runs(listed_globs(plain, config_name))
    except (HydraException, OmegaConfBaseException) as e:  # Hydra's grammar cannot read a value
        fail(hydra_error_line(e, plain, config_name))
    for run in runs:
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
                headless = headless_exp_file(compose(config_name=config_name, overrides=run),
                                             override_value(run, "exp") or "the default exp")
            if headless:
                fail(headless)
        except MissingConfigException as e:
            missing = re.search(r"Could not find '(.+)/([^/']*)'", str(e))  # `exp=`: no name at all
            if missing and e.options:
                where = unimportable_searchpath(plain) or installed_elsewhere(missing[1], missing[2])
                near = [] if where else difflib.get_close_matches(missing[2], e.options, n=1)
                fail(f"{missing[1]}={missing[2]} is unknown" + (f" (did you mean {near[0]}?)" if near else "")
                     + f"; available: {', '.join(sorted(e.options))}{where}")
            fail(moved_plan_base(str(e)) or str(e).splitlines()[0])
        except (ConfigCompositionException, HydraException, OmegaConfBaseException) as e:
            job = f" (in the sweep's job {' '.join(group_choices(run))})" if len(runs) > 1 else ""
            fail(hydra_error_line(e, run, config_name) + job)
        except ValueError as e:  # `scheduler=null`: Hydra's "Config group override must be a string or a list"
            nulled = [o for o in group_choices(run) if o.split("=", 1)[1] in ("null", "")]
            fail(f"{' '.join(nulled) or e}: a config group takes the name of one of its files "
                 f"(see --help), not null" if nulled else f"{e} (overrides: {' '.join(run)})")
        except yaml.YAMLError as e:  # a user's own config file (through hydra.searchpath)
            mark = getattr(e, "problem_mark", None)
            where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
            fail(f"{where} is not valid YAML ({getattr(e, 'problem', None) or e}); fix that file")


def reject_literal_interpolation_in_run_name(argv: list[str]) -> None:
    """A run_name holding a literal `${` (escaped, or never closed): Hydra reads the run dir's path made of it
    (outputs/${run_name}) as an interpolation again, and failed with a traceback after making the dir."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "run_name" and ("\\${" in value or re.search(r"\$\{(?![^{}]*\})", value)):
            fail(f"{arg}: a run_name cannot hold a literal '${{' (it names the run dir, whose path Hydra reads as "
                 f"an interpolation); pick a name without it")


def reject_list_item_deletion(overrides: list[str]) -> None:
    """`~curriculum.stages.2` (a plan's stage, or a stage's dataset, dropped on the command line): OmegaConf cannot
    delete a list item by its index, and Hydra failed with three chained tracebacks ending in "TypeError: list
    indices must be integers or slices, not str"."""
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("~") and re.fullmatch(r"[\w.]*\.\d+", key[1:]):
            listed = key[1:].rsplit(".", 1)[0]
            plan = (", or copy the plan into a file of your own without it (DIR/curriculum/my_plan.yaml, used with "
                    "'hydra.searchpath=[file://DIR]' curriculum=my_plan)") if listed.startswith("curriculum.") else ""
            fail(f"{override}: Hydra cannot drop an item of a list ({listed}) on the command line; give the whole "
                 f"list ({listed}=[...]){plan}")


def reject_unreadable(overrides: list[str]) -> None:
    """The first override Hydra's grammar cannot read, by name, with the quoting that reads it: Hydra said only
    "mismatched input '=' expecting <EOF>" for hydra.run.dir=sweep/exp=a,lr=0.003 (a sweep job's dir)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as e:
            key, _, value = override.partition("=")
            said = str(e).splitlines()[0]
            if not re.fullmatch(r"[+~]{0,2}[\w.@/-]+", key):
                fail(f"{override}: {key!r} is no config key (a key is a dotted name, as in model.num_blocks; Hydra: "
                     f"{said})")
            if value.endswith(",") and not value.startswith("["):
                fail(f"{override}: a value cannot end in a comma; drop it (a sweep lists values: {key}={value}VALUE2)")
            if value.startswith("~/") and key.lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir"):  # quoted, a dir
                fail(f"{override}: Hydra does not expand ~ (quoted, it would make a directory named '~' here); type "
                     f"{key}=$HOME/{value[2:]} (unquoted: the shell expands $HOME)")  # named '~' in the current one
            quoted = shell_word(f"{key}={quote(value, always=True)}")
            fix = ("quote each item of the list that holds quotes, commas or '=', as in prompt=\"[\\\"it's\\\",b]\""
                   if value.startswith("[") else f"quote it whole, as in {quoted} (a value holding '=', ',', quotes, "
                                                 f"brackets or spaces)")
            fail(f"{override}: Hydra cannot read this value ({said}); {fix}")


def ambiguous_value(hydra_said: str, config_name: str) -> None:
    """Hydra's five lines for `key=a,b` without -m, as one."""
    if found := re.search(r"Ambiguous value for argument '([^=']+)=(.*)'\n", hydra_said):
        key, value = found[1], found[2].replace("\\'", "'")
        listed = ("generate takes one value a setting (a comma lists several): run it once per value"
                  if config_name == "generate" else "a comma makes a sweep, which needs -m")
        text = "" if all(map(number_text, value.split(","))) else (  # numbers: a sweep or a list, not one text
            f"; for one value that holds commas, quote it: {shell_word(f'{key}={quote(value, always=True)}')}")
        fail(f"{key}={value}: {listed}{text}; for a list, {shell_word(f'{key}=[{value}]')}")


def unimportable_searchpath(overrides: list[str]) -> str:
    """The configs of an experiment outside lmplay come through `hydra.searchpath=[pkg://my_lab.conf]`, which
    Hydra skips without a word when my_lab cannot be imported: say so, or the user hunts a typo in exp=."""
    import importlib.util

    def importable(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    packages = [m[1] for o in overrides if o.startswith("hydra.searchpath") for m in re.finditer(r"pkg://([\w.]+)", o)]
    hints = []
    for package in packages:
        top, _, inner = package.partition(".")
        if not importable(top):
            hints.append(f" (hydra.searchpath pkg://{package}: {top} is not importable; pip install -e its project, "
                         f"or put the directory that holds it on PYTHONPATH)")
        elif not importable(package):
            hints.append(f" (hydra.searchpath pkg://{package}: {top} has no {inner}; new_exp --into writes "
                         f"pkg://{top}.conf)")
    folders = [m[1] for o in overrides if o.startswith("hydra.searchpath") for m in re.finditer(r"file://([^,\]]+)", o)]
    hints += [f" (hydra.searchpath file://{folder}: no such directory)" for folder in folders
              if not Path(folder.strip("'\" ")).expanduser().is_dir()]
    return "".join(hints)


def installed_elsewhere(group: str, name: str) -> str:
    """An installed experiment package registers its versions, but Hydra sees its configs only through
    hydra.searchpath: an `exp=` the registry knows is then "unknown" unless the hint names the search path."""
    if group != "exp":
        return ""
    from lmplay.runner.registry import registered

    registration = registered().get(name)
    if registration is None or registration.factory.__module__.startswith("experiments."):
        return on_the_path(name)
    package = registration.factory.__module__.split(".")[0]
    return f" ({name} is registered by the installed package {package}: add 'hydra.searchpath=[pkg://{package}.conf]')"


def on_the_path(name: str) -> str:
    """A package on PYTHONPATH (not installed: no registration) whose conf/ has the experiment: Hydra sees it only
    through hydra.searchpath, which a user training that way forgets."""
    for entry in sys.path:
        found = next(Path(entry or ".").glob(f"*/conf/exp/{name}.yaml"), None) if Path(entry or ".").is_dir() else None
        if found is not None:
            package = found.parents[2].name
            return f" (the package {package} on the path has it: add 'hydra.searchpath=[pkg://{package}.conf]')"
    return ""


def group_choices(overrides: Iterable[str]) -> list[str]:
    """The overrides that choose a config group's file (`optimizer=sgd`, `exp=gpt2ish`)."""
    return [o for o in overrides if "=" in o and (Path(CONF_DIR) / o.split("=", 1)[0].lstrip("+~")).is_dir()]


def hydra_error_line(e: Exception, overrides: list[str], config_name: str = "config") -> str:
    cause = e.__cause__ or e
    text = " ".join(str(cause).split("\n")[0].split())
    key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
    if key and "not in struct" in str(cause) and re.search(r"\[\d+\]", str(key)):  # inside a plan's stage or dataset
        return unknown_plan_key(re.sub(r"\[(\d+)\]", r".\1", str(key)))
    if key and "not in struct" in str(cause):
        if config_name == "generate" and str(key).split(".")[0] in ("model", "tokenizer", "context_len", "exp"):
            return (f"{key} is no setting of generate: the model, its tokenizer and its context come from the "
                    f"checkpoint (python -m lmplay.inspect CHECKPOINT shows them)")
        if config_name == "config" and (owners := elsewhere(str(key))):
            return unknown_key(str(key), []) + owners
        hint = "; a prompt that holds '=' is typed prompt=\"...\"" if config_name == "generate" else ""
        searchpath = [o for o in overrides if o.startswith("hydra.searchpath")]  # where the chosen files are
        choices = group_choices(overrides) + searchpath
        if config_name == "config" and (unlisted := unlisted_parameter(str(key), choices)):
            return unlisted
        return unknown_key(str(key), every_key(config_name, choices)) + hint
    if there := already_a_key(text):
        return there
    if "index out of range" in text and (past := past_the_plan(overrides, config_name)):
        return (f"{' '.join(past)}: the plan of curriculum={group_choice(overrides, 'curriculum')} has no such stage "
                f"or dataset; a run resumed with another plan is typed with the keys it started with (its "
                f".hydra/overrides.yaml), e.g. curriculum=two_stage curriculum.path=FILE")
    return f"{text} (overrides: {' '.join(overrides)})"


def moved_plan_base(hydra_said: str) -> str | None:
    """A plan of one's own copied before conf/curriculum/base.yaml moved out of the plans: Hydra's "Could not load
    'curriculum/base'", said as its fix."""
    if plan := re.search(r"In '(curriculum/[^']+)': Could not load 'curriculum/base'", hydra_said):
        return (f"{plan[1]}.yaml starts from curriculum/base, which is conf/curriculum_base.yaml now (no plan, so no "
                f"longer in the curriculum group); start its defaults with /curriculum_base@_here_: "
                f"`defaults: [/curriculum_base@_here_, _self_]`")
    return None


def already_a_key(hydra_said: str) -> str | None:
    """`+lr=1e-3`: Hydra's "Could not append to config. An item is already at 'lr'", said as its fix."""
    if there := re.search(r"Could not append to config. An item is already at '([\w.]+)'|"
                          r"Error merging override \+([\w.]+)=", hydra_said):
        key = there[1] or there[2]
        return (f"{key} is a key already: set it without the +, {key}=VALUE (or ++{key}=VALUE, which also adds it "
                f"where a sweep's other choice has no such key)")
    return None


def sweeper_params_typed(overrides: list[str]) -> str | None:
    """`hydra.sweeper.params=...` on the command line: Hydra's sweeper starts with no params to merge into, and
    ends in OmegaConf's traceback; the command line's own form of the same sweep is its overrides."""
    if typed := [o for o in overrides if o.lstrip("+~").startswith("hydra.sweeper.params")]:
        return (f"{typed[0]}: Hydra cannot set hydra.sweeper.params on the command line; type the swept values as "
                f"overrides with -m (seed=1,2 optimizer.lr=1e-4,3e-4), or list them in an exp file under "
                f"hydra: sweeper: params:")
    return None


def set_before_the_sweep(hydra_said: str, overrides: list[str]) -> str | None:
    """`-m optimizer=sgd,rmsprop optimizer.momentum=0.9`: every job's config has the key (the check composed each),
    but Hydra first sets a sweep's single values on the config of the groups' defaults (adamw: no momentum), and
    said "Could not override" in seven lines. `++` sets the key, or adds it where a config lacks it."""
    if not (refused := re.search(r"Could not override '([\w.]+)'", hydra_said)):
        return None
    typed = [o for o in overrides if o.lstrip("+").partition("=")[0] == refused[1]]
    if not typed:
        return None
    line = typed[-1].lstrip("+")
    return (f"{line}: Hydra sets a sweep's single values on the config of each group's default before it sweeps, "
            f"and that config has no {refused[1]}; every job's has: type it ++{line}")


def unknown_plan_key(key: str) -> str:
    """A key typed into a stage or dataset entry of the plan that the entry does not list: a key entries take
    is added with `+`; anything else is a typo."""
    from lmplay.data.curriculum import STAGE_KEYS
    from lmplay.data.sources import SPEC_KEYS

    name = key.rpartition(".")[2]
    known = sorted(SPEC_KEYS | {"dataset"}) if ".datasets." in key else list(STAGE_KEYS)
    entry = key.rpartition(".")[0]
    if name == "dataset" and ".datasets." in key:  # a mapping typed for a mapping entry merges into it
        return (f"{key}: this entry of the plan is a mapping, which what is typed for it merges into, and it has no "
                f"dataset: add one with +{key}=NAME, or replace the stage's list whole: "
                f"'{entry.rpartition('.')[0]}=[{{dataset: NAME, path: ...}}]'")
    if name in known:
        preset = f" (an entry that is a preset's name is replaced whole: '{entry}={{dataset: NAME, " \
                 f"{name}: VALUE}}')" if ".datasets." in key else ""
        return f"{key}: this entry of the plan has no {name} yet; add it with +{key}=VALUE{preset}"
    close = difflib.get_close_matches(name, known, n=1)
    return f"unknown key '{key}'" + (f" (did you mean {close[0]}?)" if close else f"; valid keys: {', '.join(known)}")


def past_the_plan(overrides: list[str], config_name: str) -> list[str]:
    """The `curriculum.stages.N...` overrides whose index runs past the plan the other overrides compose
    (`curriculum.stages.1.lr=...` against the default one-stage plan)."""
    indexed = [o for o in overrides if re.match(r"[+~]*curriculum\.[\w.]*\.\d+(\.|=|$)", o)]
    try:
        cfg = composed(config_name, [o for o in overrides if o not in indexed])
    except Exception:  # noqa: BLE001 - the other overrides fail too: the generic line says so
        return []
    past = []
    for override in indexed:
        parts = override.lstrip("+~").split("=", 1)[0].split(".")
        for i, part in enumerate(parts):
            node = OmegaConf.select(cfg, ".".join(parts[:i]))
            if part.isdigit() and OmegaConf.is_list(node) and int(part) >= len(node):
                past.append(override)
                break
    return past


def group_choice(overrides: list[str], group: str) -> str:
    """The file chosen for `group` on the command line, or the root config's default."""
    typed = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").split("=", 1)[0] == group]
    defaults = [d for d in OmegaConf.to_container(root_config("config")).get("defaults", [])
                if isinstance(d, dict) and group in d]
    return typed[-1] if typed else f"{defaults[0][group]} (the default)" if defaults else "?"


def elsewhere(key: str) -> str:
    """Where a key unknown to the chosen file of its group is known: `scheduler.decay_fraction` is wsd's, and
    `model.num_cells` (the model's keys come with the experiment) nnmemory's."""
    group, _, rest = key.partition(".")
    if group == "model":
        group, rest = "exp", key
    files = sorted((Path(CONF_DIR) / group).glob("*.yaml")) if rest else []
    # unresolved: a file alone cannot resolve its interpolations of the root's keys (warmup_fraction: ${...})
    owners = [f.stem for f in files if rest in flatten(OmegaConf.to_container(OmegaConf.load(f), resolve=False))]
    return f" ({key} is a key of {group}={'/'.join(owners)})" if owners else ""


def unlisted_parameter(key: str, choices: list[str]) -> str:
    """`model.act=gelu` for a parameter of the experiment's model class that its exp file does not list (a copy
    given a new argument), `optimizer.dampening=0.1` for one of torch's SGD that sgd.yaml does not: Hydra adds a
    key only with `+`, and "unknown key" pointed away from the class."""
    group, _, name = key.partition(".")
    if group not in ("model", "optimizer", "scheduler") or not name or "." in name:
        return ""
    if group == "model" and name in RUN_SET_MODEL_KEYS:
        return not_the_models_to_set(name)
    try:
        from lmplay.runner.components import config_class

        cfg = composed("config", choices)
        cls = config_class(cfg, group)
    except Exception:  # noqa: BLE001 - no class to look in: the plain unknown-key line
        return ""
    chooser = "exp" if group == "model" else group
    where = f"{chooser}={group_choice(choices, chooser)}"
    parameters = [p for p in list(inspect.signature(cls).parameters)[group == "optimizer":]  # not its params
                  if p not in RUN_SET_MODEL_KEYS]
    if name in parameters:
        return (f"{key} is a parameter of {cls.__name__} that {where}'s file does not set: add it with "
                f"+{key}=VALUE, or give it a value in the file")
    close = difflib.get_close_matches(name, parameters, n=1)
    if close and close[0] not in cfg[group]:  # a near-typo of a key the file sets gets the plain line
        return (f"unknown key '{key}' (did you mean +{group}.{close[0]}, a parameter of {cls.__name__} that "
                f"{where}'s file does not set?)")
    return ""


def unknown_key(key: str, known: Iterable[str]) -> str:
    """`unknown key 'KEY'`, with the known key it is most likely a typo of (closest_key)."""
    close = closest_key(key, list(known))
    listing = "--cfg hydra" if key.startswith("hydra.") else "--cfg job"
    return f"unknown key '{key}'{f' (did you mean {close}?)' if close else ''}; see `{listing}` for every key"


def closest_key(key: str, known: list[str]) -> str | None:
    """The known key `key` is most likely a typo of: among the keys beside it (optimizer.lrr: optimizer.lr, by the
    last part, or by its first letters: temp, temperature); elsewhere only where none is (embed_dim:
    model.embed_dim)."""
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent and k != key}
    close = [k for k in known if k.rpartition(".")[2] == leaf and k != key][:1]  # in another group: runner.lr, or
    # batching: curriculum.batching, before batch_size beside it
    close = close or [siblings[c] for c in difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.7)]
    close = close or [k for name, k in siblings.items() if len(leaf) >= 3 and name.startswith(leaf[:4])][:1]
    if not close and not siblings:
        close = difflib.get_close_matches(key, [k for k in known if not key.startswith(f"{k}.")], n=1)
    return close[0] if close else None


def composed(config_name: str, overrides: Iterable[str] = (), with_hydra: bool = False) -> Any:
    """The config with these overrides (group choices such as `optimizer=sgd`, `hydra/launcher=joblib`, or any
    key), else the defaults; with Hydra's own keys (`hydra.run.dir`) when `with_hydra`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=with_hydra)


PLUS_SEARCHPATH = "Hydra reads its search path from hydra.searchpath=[...] only, and ignores +hydra.searchpath: drop the +"


def unknown_hydra_key(key: str, config_name: str, choices: Iterable[str]) -> str:
    """A `hydra.*` key the config has not: a typo (with the key it is closest to), or a new key of one of Hydra's
    mappings (`hydra.job.env_set.FOO`), which only `+key=value` adds."""
    if hint := launcher_not_chosen(key, any(c.startswith("hydra/launcher=") for c in choices)):
        return hint
    cfg = composed(config_name, choices, with_hydra=True)
    parent = OmegaConf.select(cfg, key.rpartition(".")[0])
    if OmegaConf.is_dict(parent) and OmegaConf.get_type(parent) is dict:
        return f"{key} is a new key of the mapping {key.rpartition('.')[0]}: add it with +{key}=VALUE"
    return unknown_key(key, every_key(config_name, list(choices), with_hydra=True))


def launcher_not_chosen(key: str, chosen: bool) -> str:
    """`hydra.launcher.n_jobs` typed without `hydra/launcher=joblib`: Hydra's basic launcher has no keys."""
    if key.startswith("hydra.launcher.") and not chosen:
        return f"{key} is a launcher's key: choose the launcher too (hydra/launcher=joblib, or slurm_cpu/slurm_gpu)"
    return ""


def reject_added_hydra_keys() -> None:
    """`+hydra.run.dirr=x`, which Hydra takes and never reads, is refused like any misspelled key; a key added
    to one of Hydra's mappings (`+hydra.job.env_set.FOO=1`) is what `+` is for."""
    import dataclasses

    hydra_cfg = HydraConfig.get()
    typed = OmegaConf.to_container(hydra_cfg.overrides, resolve=False)  # a prompt's ${HOME} stays text
    overrides = [*typed["hydra"], *typed["task"]]
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if not override.startswith("+") or not key.startswith("hydra."):
            continue
        if key == "hydra.searchpath":
            raise ConfigError(PLUS_SEARCHPATH)
        parent_path, _, name = key.removeprefix("hydra.").rpartition(".")
        kind = OmegaConf.get_type(OmegaConf.select(hydra_cfg, parent_path) if parent_path else hydra_cfg)
        if dataclasses.is_dataclass(kind) and name not in {f.name for f in dataclasses.fields(kind)}:
            known = dotted_keys(OmegaConf.to_container(hydra_cfg, resolve=False), "hydra.")
            chosen = hydra_cfg.runtime.choices.get("hydra/launcher") not in (None, "basic")
            raise ConfigError(launcher_not_chosen(key, chosen) or unknown_key(key, [k for k in known if k != key]))


def every_key(config_name: str, choices: list[str] = (), with_hydra: bool = False) -> list[str]:
    """Every dotted key of the `composed` config."""
    return dotted_keys(OmegaConf.to_container(composed(config_name, choices, with_hydra), resolve=False))


def dotted_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys, stack = [], [(prefix, cfg)]
    while stack:
        prefix, node = stack.pop()
        for k, v in node.items():
            keys.append(prefix + k)
            if isinstance(v, dict):
                stack.append((f"{prefix}{k}.", v))
    return keys


def headless_exp_file(cfg: Any, exp: str) -> str | None:
    """An exp file without `# @package _global_` on its first line (Hydra's default package for a group's file is
    the group) puts its keys under `exp:`, where nothing reads them: the run trained its defaults' experiment under
    the new name. The message naming them, or None."""
    node = cfg.get("exp") if hasattr(cfg, "get") else None
    keys = list(flatten(OmegaConf.to_container(node, resolve=False))) if hasattr(node, "keys") else []
    if not keys:  # a file of defaults alone: they keep their own packages
        return None
    keys = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return (f"exp={exp}: its file sets {keys} under `exp:`, where nothing reads them; make `# @package _global_` "
            f"its first line, as in lmplay's conf/exp/*.yaml")


def reject_added_keys(cfg: Any, config_name: str, set_by_groups: Iterable[str] = ()) -> None:
    """A misspelled key added with `+key=value` (or `++`) at the top level, which Hydra's struct check lets
    through and nothing would read, is a ConfigError like any other misspelled key. Known: the root config
    file's keys, the config groups, and `set_by_groups` (keys such as `model` that a group's file sets)."""
    known = set(root_config(config_name)) - {"defaults", "hydra"}
    choices = HydraConfig.get().runtime.choices
    headless = headless_exp_file(cfg, choices.get("exp", "the default exp"))
    if headless:
        raise ConfigError(headless)
    known |= set(choices) | set(set_by_groups)
    for key in cfg:
        if key not in known:
            raise ConfigError(unknown_key(key, sorted(known)))
    reject_added_hydra_keys()
