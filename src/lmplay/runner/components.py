"""The runner's five components: curriculum, model, runner, optimizers, lr_schedulers (design.md's order).
LMRunnerBase.setup constructs the curriculum last: it tokenizes its data, minutes for a big dataset, and a
mistake in the other four's settings must be said before that, not after.

Each is the single owner of its concern; each reads its config group, merges it with the checkpoint
(see `Component.settle`) and archives itself into the next checkpoint.
"""

import importlib
import inspect
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from lmplay.config import CONF_DIR, RUN_SET_MODEL_KEYS, check_kind, root_config
from lmplay.errors import ConfigError
from lmplay.files import CHECKPOINT, RECORD_KINDS
from lmplay.model import all_finite
from lmplay.modules import moved_layer
from lmplay.runner import checkpoint
from lmplay.runner.basic import annotated_kind, check_args_kept, check_model_args
from lmplay.runner.component_base import (
    Component,
    subclass_named,
    validate_args,
    without_target,
)
from lmplay.runner.optimizers import freeze, param_groups, regrouped_state
from lmplay.runner.schedules import Schedule
from lmplay.stats.runs import records_problem


def signature_defaults(fn: Any, skip: tuple[str, ...] = ("self",)) -> dict[str, Any]:
    """A callable's keyword parameters and defaults: the schema of a config group that targets it."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in params if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def signature_kinds(cls: type) -> dict[str, type]:
    """The kind each keyword parameter with a None default declares (`fused: bool | None` -> bool), where it names
    one of bool, int, float, str besides None."""
    return {p.name: kind for p in inspect.signature(cls).parameters.values() if p.default is None
            and (kind := annotated_kind(cls, p.name, (bool, int, float, str))[0]) is not None}


def check_required(group: str, cls: type, args: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """A parameter `cls` requires (no default) that the group's config leaves unset, or null, is one line, not the
    constructor's TypeError traceback."""
    required = [p.name for p in inspect.signature(cls).parameters.values() if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip]
    takes_null = null_takers(cls)
    if missing := [name for name in required if args.get(name) is None and name not in takes_null]:
        raise ConfigError(f"{cls.__module__}.{cls.__qualname__} needs {', '.join(f'{group}.{m}' for m in missing)}, "
                          f"which its {group} config leaves unset (or null): add it to the conf file, or type "
                          f"+{group}.{missing[0]}=VALUE")


def first_parameter(cls: type) -> str:
    """The name of an optimizer class's first parameter, its parameters' (`params` in torch's, by any name)."""
    return next(iter(inspect.signature(cls).parameters), "params")


def null_takers(cls: type) -> set[str]:
    """The parameters of `cls` that take None: a None default, or an annotation that allows it. Elsewhere a null
    means the class's default: most classes pass their arguments on to torch's, which takes no None there."""
    return {p.name for p in inspect.signature(cls).parameters.values()
            if p.default is None or annotated_kind(cls, p.name)[1]}


TARGET_EXAMPLES = {"model": "experiments.gpt2ish.model.GPT2ish", "curriculum": "lmplay.data.curriculum.Curriculum",
                   "optimizer": "torch.optim.AdamW", "scheduler": "lmplay.runner.schedules.Cosine"}


def config_class(cfg: DictConfig, group: str) -> type:
    """The class a group's config names in `_target_`; a file without one, or a name that cannot be imported
    (a typo, experiment code that fails to import), is one line naming it."""
    target = OmegaConf.select(cfg, f"{group}._target_")
    if not target:
        raise ConfigError(f"the {group} config names no class: its file needs a _target_ line, like "
                          f"_target_: {TARGET_EXAMPLES[group]}")
    return class_named(str(target), group)


def class_named(target: str, group: str) -> type:
    """The class a config's `_target_` names (never one read from a checkpoint: see subclass_named)."""
    module, _, name = target.rpartition(".")
    try:  # not hydra's get_class, which logs the failure in several lines before raising it
        found = getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 - what importing someone's module raises varies
        raise ConfigError(f"{group}._target_={target!r} cannot be imported ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}){moved_layer(e)}") from None
    if not isinstance(found, type):
        raise ConfigError(f"{group}._target_={target!r} is not a class; name one, like {TARGET_EXAMPLES[group]}")
    return found


class CurriculumComponent(Component):
    """The plan of stages and the position in it."""

    name, group = "curriculum", "curriculum"
    machine = ("cache_dir", "tokenize_procs")  # this machine's, never the checkpoint's: a run dir from a cluster (or
    # a crafted one) sent the resume's tokenized data into its cache_dir, ahead of LMPLAY_CACHE

    def advertise(self) -> dict[str, Any]:
        return signature_defaults(config_class(self.runner.cfg, "curriculum"))

    def kinds(self) -> dict[str, type]:
        return signature_kinds(config_class(self.runner.cfg, "curriculum"))

    def construct(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                  state: dict[str, Any] | None) -> None:
        kept = {k: v for k, v in state_args.items() if k not in self.machine} if state_args is not None else None
        args = self.settle(without_target(construction_args), kept)  # a resumed run keeps its data plan
        # called, not instantiated: Hydra would call any `_target_` nested in the (checkpoint's) stages
        self.curriculum = config_class(self.runner.cfg, "curriculum")(**args)
        with self.runner.world.main_first():
            self.curriculum.prepare(self.runner.tokenizer, self.runner.context_len, self.runner.seed,
                                    state["position"] if state else None)

    def archive(self) -> dict[str, Any]:
        return {"state_args": dict(self.args), "state": {"position": self.curriculum.state_dict()}}


class ModelComponent(Component):
    """Architecture arguments and weights. Architecture comes from the checkpoint on resume."""

    name, group = "model", "model"
    resumable = ("dropout",)
    # typed as `tokenizer=` and `context_len=`; the vocabulary follows from the tokenizer (and vocab_multiple)
    reported_as: ClassVar[dict[str, str | None]] = {key: None if key == "vocab_size" else key
                                                     for key in RUN_SET_MODEL_KEYS}

    def advertise(self) -> dict[str, Any]:
        return signature_defaults(self.runner.model_class)

    def kinds(self) -> dict[str, type]:
        return signature_kinds(self.runner.model_class)

    def construct(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                  state: dict[str, Any] | None) -> None:
        args = self.settle(without_target(construction_args), state_args,
                           fixed=frozenset(self.advertise()) - set(self.resumable))
        check_model_args(self.runner.model_class, args)
        if state:  # before its memory: the checkpoint's arguments may ask for any size
            checkpoint.check_weights_fit(lambda: self.runner.model_class(**args), args, state,
                                         "the checkpoint's weights", "; fresh=true starts over")
        self.model = self.runner.model_class(**args).to(self.runner.device)
        check_args_kept(self.model, args)
        if state:
            checkpoint.load_weights(self.model, state["weights"], "the checkpoint's weights",
                                    "; was its code changed since? fresh=true starts over")
        if state and not all_finite(self.model.parameters()):  # trained on, its first step failed as diverged and
            path = self.runner.run_dir / CHECKPOINT  # named this file the last good one
            raise ConfigError(f"{path}'s weights hold NaN or inf: training on from them cannot work"
                              f"{checkpoint.previous_good(path) or ''}; or start over with fresh=true")
        if state and (changed := checkpoint.changed_code(self.model, state)) and self.runner.world.is_main:
            print(f"note: {', '.join(changed)} changed since this checkpoint was saved: a step trained from here on "
                  f"runs the code as it is now, and the run's curves would mix the two; fresh=true (or another "
                  f"run_name) trains the new code from the start")

    def archive(self) -> dict[str, Any]:
        return checkpoint.model_part(self.model)


@dataclass
class RunnerSettings:
    batch_size: int = 50
    mini_batch_size: int = 4
    grad_clip: float | None = None
    include_prompts: bool = True
    validation_interval: int = 10000
    validation_batches: int = 8
    save_interval: int = 50000
    log_interval: int = 1

    def check(self, where: str, world_size: int = 1) -> None:
        for f in fields(self):  # a stage's overrides come from a plan file as written: `include_prompts: "false"`
            check_kind(f"{where}{f.name}", getattr(self, f.name), float if f.name == "grad_clip" else type(f.default),
                       nullable=f.name == "grad_clip")
        for f in ("batch_size", "mini_batch_size", "validation_interval", "validation_batches", "save_interval",
                  "log_interval"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{where}{f}={getattr(self, f)} must be >= 1")
        if self.grad_clip is not None and not self.grad_clip > 0:  # a negative norm would flip every gradient
            raise ConfigError(f"{where}grad_clip={self.grad_clip} must be > 0 (or null: no clipping)")
        if self.batch_size % world_size:  # mini-batches need not divide a rank's share: the last is shorter
            raise ConfigError(f"{where}batch_size={self.batch_size} is not divisible by {world_size} ranks: "
                              f"batch_size is the global batch, split evenly over the ranks; use a multiple of "
                              f"{world_size}")


class RunnerComponent(Component):
    """Batch sizes, validation and save cadence, progress counters and the stats records."""

    name, group = "runner", "runner"

    def advertise(self) -> dict[str, Any]:
        return {f.name: f.default for f in fields(RunnerSettings)}

    def construct(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                  state: dict[str, Any] | None) -> None:
        self.settings = RunnerSettings(**self.settle(construction_args, state_args))
        self.settings.check("", self.runner.world.size)
        self.progress = dict(state["progress"]) if state else dict.fromkeys(checkpoint.COUNTERS, 0)  # checked at load
        try:
            records = json.loads(state["records_json"]) if state else {}
        except (ValueError, TypeError, RecursionError) as e:  # RecursionError: nested 100,000 deep
            raise checkpoint.damaged("stats records", f"not JSON ({type(e).__name__})") from None
        if (problem := records_problem(records)) is not None:
            raise checkpoint.damaged("stats records", problem)
        self.records = {kind: records.get(kind, []) for kind in RECORD_KINDS}
        window = (state or {}).get("record_window") or {"steps": 0}  # steps the next record averages
        self.record_window = window = dict(window) if isinstance(window, dict) else {"steps": None}
        if not (isinstance(window.get("steps"), int) and window["steps"] >= 0 and (not window["steps"] or all(
                isinstance(window.get(k), (int, float)) for k in ("loss", "correct", "tokens")))):
            raise checkpoint.damaged("record window numbers", str(window))

    def stage_settings(self, overrides: dict[str, Any], stage: str, world_size: int = 1) -> RunnerSettings:
        keys = self.advertise()
        settings = RunnerSettings(**{**asdict(self.settings), **{k: v for k, v in overrides.items() if k in keys}})
        settings.check(f"curriculum stage '{stage}' overrides: ", world_size)
        return settings

    def archive(self) -> dict[str, Any]:
        """The records go in as one JSON string: pickling them value by value made a save's cost grow with
        the run's length (a million floats by step 100k); JSON keeps floats exact."""
        return {"state_args": dict(self.args),
                "state": {"progress": dict(self.progress), "records_json": self.runner.stats.as_json(),
                          "record_window": dict(self.record_window)}}


def fused_by_default(device: torch.device) -> bool:
    """optimizer.fused=null: torch's fused kernel on CUDA and on a CPU too, where AdamW's step over gpt2ish's 120M
    parameters took 32 ms against the per-tensor loop's 273 (benchmarks/optimizer_step.py); not on MPS, where
    lmplay is unmeasured."""
    return device.type in ("cuda", "cpu")


def check_optimizer_class(target: str, cls: type) -> None:
    """What lmplay needs of an optimizer class, said before its keys are checked (an `unknown key weight_decay`
    first invited ~optimizer.weight_decay): param_groups the schedule sets (a class of one's own that is no
    torch.optim.Optimizer failed at the start report), and the lr and weight_decay arguments (LBFGS and SparseAdam,
    which a checkpoint may name, take no weight_decay; an own class's `learning_rate` was a KeyError)."""
    if not issubclass(cls, torch.optim.Optimizer):
        raise ConfigError(f"optimizer._target_={target} is no torch.optim.Optimizer subclass, whose param_groups "
                          f"lmplay's lr schedule and weight-decay groups set: subclass torch.optim.Optimizer")
    takes = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
        raise ConfigError(f"optimizer {target} takes **kwargs, whose keys lmplay cannot read (it checks, reports and "
                          f"keeps each argument by name): name lr, weight_decay and its own arguments in its __init__")
    if missing := [key for key in ("lr", "weight_decay") if key not in takes]:
        raise ConfigError(f"optimizer {target} takes no {' or '.join(missing)}, which lmplay's lr schedule and "
                          f"parameter groups set: choose one that does (optimizer=adamw, optimizer=sgd), or name its "
                          f"own arguments lr and weight_decay")


class OptimizerComponent(Component):
    """The optimizer with weight-decay groups and frozen parameters."""

    name, group = "optimizers", "optimizer"
    extra = {"freeze": [], "fused": None}

    def advertise(self) -> dict[str, Any]:
        cls = class_named(self.target, self.group)
        return {**signature_defaults(cls, skip=(first_parameter(cls),)), **self.extra}

    def kinds(self) -> dict[str, type]:
        return {**signature_kinds(class_named(self.target, self.group)), "fused": bool}

    def construct(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                  state: dict[str, Any] | None) -> None:
        self.target, config_args = self.kept_target(construction_args, state_args, torch.optim.Optimizer)
        target = self.target
        check_optimizer_class(target, class_named(target, self.group))
        same_kind = state_args is not None and state_args.get("_target_") == target
        args = self.settle(config_args, state_args if same_kind else None)
        if state_args is not None and not same_kind:
            print(f"optimizer changed to {target}: its state starts fresh{self.settings_now(args, state_args)}")
        model = self.runner.model
        frozen = freeze(model, args["freeze"])
        if frozen:
            print(f"frozen: {len(frozen)} parameter tensors matching {args['freeze']}")
        cls = class_named(target, self.group)
        takes_null = null_takers(cls)  # a null reaches the class where it takes one (update_clip: float | None),
        kwargs = {k: v for k, v in args.items()  # elsewhere the class's default stands for it (eps=null, as
                  if k not in self.extra and (v is not None or k in takes_null)}  # before: torch refuses None)
        check_required(self.group, cls, kwargs, skip=(first_parameter(cls),))
        for key in ("lr", "weight_decay"):  # lmplay's schedule and parameter groups read them; torch takes inf
            if key in args and not (isinstance(args[key], (int, float)) and math.isfinite(args[key])):
                shown = "null" if args[key] is None else repr(args[key])
                raise ConfigError(f"optimizer.{key}={shown}: the lr schedule and the weight-decay groups need a "
                                  f"finite number there, like 3e-4")
        if kwargs.get("betas") is not None:  # as many as the class's default has: Adan takes three
            own = signature_defaults(cls).get("betas")
            like = list(own) if isinstance(own, (tuple, list)) and len(own) != 2 else [0.9, 0.95]
            if len(kwargs["betas"]) != len(like) or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                            for b in kwargs["betas"]):
                count = {2: "two", 3: "three"}.get(len(like), str(len(like)))
                raise ConfigError(f"optimizer.betas={list(kwargs['betas'])} should be {count} numbers, like {like}")
            kwargs["betas"] = tuple(kwargs["betas"])
        if "fused" in signature_defaults(cls):
            fused = args["fused"]
            unfusable = kwargs.get("foreach") or kwargs.get("differentiable")  # torch refuses either with fused
            kwargs["fused"] = fused_by_default(self.runner.device) and not unfusable if fused is None else fused
        elif args["fused"]:  # reported as typed, and run unfused (fused=false is what it does)
            raise ConfigError(f"optimizer.fused=true: {target} has no fused kernel; drop it (optimizer.fused=null)")
        self.optimizer = cls(param_groups(model, args["weight_decay"]), **kwargs)
        self.base_lr = args["lr"]
        if state and state["optimizer"] is None:  # an export that changed the parameters (unified_embed's)
            print("note: the checkpoint holds no optimizer state (left out where its parameters changed): the "
                  "optimizer's moments start fresh")
        elif state and same_kind:
            # the run's settings are the class's arguments (and lmplay's group name); any other key of a group is
            # the optimizer's own running state, kept there as Prodigy's `d` and `k` or schedule-free AdamW's
            # `weight_sum`: the checkpoint's, or a resume restarted it (a class taking **kwargs: all are settings)
            params = inspect.signature(cls).parameters
            any_key = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            settings = [{k: v for k, v in group.items() if k != "params" and (any_key or k in params or k == "name")}
                        for group in self.optimizer.param_groups]
            try:  # a run grouped by the earlier rule: its state regrouped
                self.optimizer.load_state_dict(regrouped_state(state["optimizer"], model) or state["optimizer"])
                misfit = next((f"a state of shape {list(v.shape)} for a parameter of {list(p.shape)}"
                               for p, s in self.optimizer.state.items() for v in s.values()
                               if isinstance(v, torch.Tensor) and v.dim() and v.shape != p.shape), None)
                if misfit:  # torch counts a group's parameters, not their shapes: the fused step crashed (SIGSEGV)
                    raise ValueError(misfit)
            except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
                raise ConfigError(f"the checkpoint's optimizer state does not fit the model's parameters ({e}); "
                                  f"optimizer.freeze or the model's code changed? fresh=true starts over") from None
            for group, own in zip(self.optimizer.param_groups, settings):  # the checkpoint brings state, not settings:
                group.update(own)  # torch's load restores its groups' betas, eps, weight decay, fused over the run's

    def settings_now(self, args: dict[str, Any], state_args: dict[str, Any]) -> str:
        """The run-wide settings (`lr: ${lr}` in its file) that a newly chosen optimizer takes from the config, where
        they differ from the run's before: an lr typed on an earlier command is the old optimizer's, not the new
        one's."""
        borrowed = self.runner.interpolated_keys(self.group).items()
        changed = [(alias, args[key], state_args[key]) for key, alias in borrowed
                   if key in state_args and key in args and args[key] != state_args[key]
                   and alias not in self.runner.overridden]
        if not changed:
            return ""
        now = ", ".join(f"{alias}={new} (was {old})" for alias, new, old in changed)
        keep = " ".join(f"{alias}={old}" for alias, _, old in changed)
        return f"; it takes {now} from the config ({keep} keeps the run's)"

    def set_lr(self, lr: float) -> None:
        """Every group's lr, as the schedule gives it for the step about to run."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def set_weight_decay(self, weight_decay: float) -> None:
        """The decayed group's weight decay (a stage may override it; the next stage goes back to the run's)."""
        for group in self.optimizer.param_groups:
            if group.get("name") == "decay":
                group["weight_decay"] = weight_decay

    def archive(self) -> dict[str, Any]:
        return {"state_args": {"_target_": self.target, **self.args}, "state": {"optimizer": self.optimizer.state_dict()}}


class SchedulerComponent(Component):
    """The lr schedule of each stage: a pure function of the stage's step, so resume restores it exactly."""

    name, group = "lr_schedulers", "scheduler"

    def advertise(self) -> dict[str, Any]:
        return signature_defaults(class_named(self.target, self.group))

    def kinds(self) -> dict[str, type]:
        return signature_kinds(class_named(self.target, self.group))

    def construct(self, construction_args: dict[str, Any], state_args: dict[str, Any] | None,
                  state: dict[str, Any] | None) -> None:
        self.target, config_args = self.kept_target(construction_args, state_args, Schedule)
        if not issubclass(class_named(self.target, self.group), Schedule):  # before its keys: torch's
            # CosineAnnealingLR was told `unknown key 'warmup_fraction'`, as if it were one to configure
            raise ConfigError(f"scheduler._target_={self.target} is not an lmplay lr schedule: lmplay's schedules are "
                              f"pure functions of a stage's step (subclasses of lmplay.runner.schedules.Schedule, like "
                              f"lmplay.runner.schedules.Cosine), not torch.optim.lr_scheduler objects; write yours as "
                              f"a Schedule subclass with a decay(step, steps) method, or choose one with "
                              f"scheduler=NAME")
        self.settle(config_args, state_args)
        try:
            self.schedule = self.build(self.target, self.args)
        except ConfigError as e:  # a checkpoint's value an older lmplay trained with unchecked (min_lr=-1e-4)
            key = re.match(rf"{self.group}\.(\w+)=", str(e))
            if state_args is None or key is None or key[1] in self.runner.typed_keys(self.group):
                raise
            plus = "" if key[1] in self.runner.cfg[self.group] else "+"  # a key of the config's scheduler file
            raise ConfigError(f"the checkpoint's {e}: an older lmplay trained with it unchecked; type "
                              f"{plus}{self.group}.{key[1]}=VALUE to replace it") from None

    def archive(self) -> dict[str, Any]:
        return {"state_args": {"_target_": self.target, **self.args}, "state": {}}

    def build(self, target: str, args: dict[str, Any]) -> Schedule:
        """A stage's override names its class (it may come from a checkpoint): only a Schedule is built."""
        cls = subclass_named(target, Schedule)
        if cls is None and target.rpartition(".")[0] not in sys.modules and not target.startswith("lmplay."):
            raise ConfigError(f"scheduler _target_={target!r}: a stage names a schedule of its own module only where "
                              f"the run has imported it (a stage's settings may come from a checkpoint, which imports "
                              f"no code by itself): make it the run's scheduler (scheduler=NAME, its conf file) or "
                              f"import its module in your package's versions.py")
        if cls is None:
            raise ConfigError(f"scheduler _target_={target!r} is not an lr schedule (a subclass of "
                              f"lmplay.runner.schedules.Schedule, like lmplay.runner.schedules.Cosine)")
        validate_args(self.group, args, signature_defaults(cls), signature_kinds(cls))
        check_required(self.group, cls, args)
        return cls(**args)

    @staticmethod
    def mapping_for(name: Any) -> str:
        """What a stage writes for `scheduler: NAME`: the group's names choose the run's schedule, not a stage's."""
        known = isinstance(name, str) and (Path(CONF_DIR) / "scheduler" / f"{name}.yaml").is_file()
        target = root_config(f"scheduler/{name}")["_target_"] if known else "..."
        takes_warmup = not known or "warmup_steps" in signature_defaults(class_named(target, "scheduler"))
        return f"{{_target_: {target}{', warmup_steps: 10' if takes_warmup else ''}}}"

    def for_stage(self, override: Any) -> Schedule:
        """A stage may override the schedule with a dict of its arguments (and optionally another `_target_`)."""
        if override is None:
            return self.schedule
        if not isinstance(override, dict):
            raise ConfigError(f"a stage's scheduler override must be a mapping like {self.mapping_for(override)}, "
                              f"not {override!r}")
        target = override.get("_target_", self.target)
        base = self.args if target == self.target else {}
        return self.build(target, {**base, **without_target(override)})
