"""LMRunnerBase: owns the five components and runs the training loop over the curriculum's stages."""

import contextlib
import gc
import math
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from lmplay.config import CONF_DIR, RUN_SET_MODEL_KEYS, group_file_keys, not_the_models_to_set, root_config
from lmplay.data.batch import Batch
from lmplay.data.tokenizers import get_tokenizer
from lmplay.device import amp_dtype, autocast, pick_device, synchronize, unused_amp_dtype
from lmplay.errors import ConfigError, DivergedError, LmplayError, OutputError
from lmplay.files import CHECKPOINT, CORRUPTED, set_aside_old_run
from lmplay.loss import split_terms, triton_loss_runs_on
from lmplay.model import all_finite
from lmplay.runner import checkpoint
from lmplay.runner.compiling import torch_compiled
from lmplay.runner.component_base import Provenance, chosen_file_values, same
from lmplay.runner.distributed import LossModule, init_world, rank_step_seed
from lmplay.runner.progress import Progress
from lmplay.runner.records import RecordWindow, StepLog
from lmplay.runner.rejections import rejected_settings
from lmplay.runner.schedules import Schedule
from lmplay.runner.stopping import StopRequest
from lmplay.runner.components import (CurriculumComponent, ModelComponent, OptimizerComponent, RunnerComponent,
                                      RunnerSettings, SchedulerComponent, config_class)
from lmplay.stats import StatsWriter
from lmplay.stats.runs import record_resumed_change
from lmplay.stats.speed import SpeedMeter

STAGE_KEYS_ELSEWHERE = ("lr", "weight_decay", "scheduler")
GROUPS = ("model", "runner", "optimizer", "scheduler", "curriculum")
RUN_KEYS = ("device", "amp", "amp_dtype", "compile", "compile_options", "fused_loss", "seed", "vocab_multiple",
            "max_steps", "fresh")


@dataclass
class StagePlan:
    """What one curriculum stage trains with: the run's settings under the stage's own overrides."""

    settings: RunnerSettings
    schedule: Schedule
    base_lr: float
    weight_decay: float

    def lr(self, stage_step: int, total: int) -> float:
        return self.schedule.lr(self.base_lr, stage_step, total)


class LMRunnerBase:
    """Builds the components from a composed config (+ the run dir's checkpoint) and trains.

    `overridden` are the keys the user typed on this command line (e.g. {"lr", "optimizer.betas"}):
    they win over the checkpoint when a run resumes.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, model_class: type, overridden: set[str] = frozenset()) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.model_class = model_class
        self.overridden = set(overridden)
        self.provenance = Provenance()
        self.device = pick_device(cfg.device)
        self.world = init_world(self.device.type)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 matmuls (Ampere+)
            torch.backends.cudnn.allow_tf32 = True
        if self.world.distributed and self.device.type == "cuda":
            if self.world.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"torchrun started local rank {self.world.local_rank} on a node with "
                                  f"{torch.cuda.device_count()} GPU(s): one rank a GPU, --nproc_per_node="
                                  f"{torch.cuda.device_count()} or fewer")
            self.device = torch.device("cuda", self.world.local_rank)
        if self.device.type == "cuda" and self.device.index is not None:  # cuda:N: its streams and events, not GPU 0's
            torch.cuda.set_device(self.device)
        self.stop = StopRequest(self.run_dir, speaks=self.world.is_main)
        self.on_first_save: Callable[[], None] | None = None  # lmplay.train: a resume's label, once it has saved
        # a sweep's job names its sweep dir (lmplay.train); fresh=true again would start over again
        self.resume_hint = "run the same command without fresh=true to resume" if cfg.fresh else \
            "run the same command to resume"
        self.defer_reads = self.device.type != "cpu"  # see _run_steps
        self.display = Progress(shown=self.world.is_main)
        self._no_validation_noted: set[str] = set()  # stages whose held-out rows make no batch, said once
        self._part_held_out_noted: set[str] = set()  # stages whose validation measures part of their held-out rows
        self._held_out_change_noted = False  # a resume's held-out set differs from the run's before: said once
        self.unread_keys: set[str] = set()  # typed top-level keys that nothing of this run reads (a note says so)

    # -- construction ---------------------------------------------------------------------------------------
    def explicit_keys(self, group: str) -> set[str]:
        """Keys of a config group the user set on the command line: typed_keys, or all of them when the
        group's file was chosen (`curriculum=two_stage`)."""
        if group in self.overridden:
            raw = OmegaConf.to_container(self.cfg[group], resolve=False) if group in self.cfg else {}
            return set(raw) - {"_target_"}
        return self.typed_keys(group)

    def interpolated_keys(self, group: str) -> dict[str, str]:
        """Keys of a group's file that take their value from elsewhere, and what they name (`lr: ${lr}` -> lr):
        the exp file or the defaults set it, or the command line through the top-level alias."""
        raw = OmegaConf.to_container(self.cfg[group], resolve=False) if group in self.cfg else {}
        return {k: v[2:-1] for k, v in raw.items() if isinstance(v, str) and v.startswith("${")}

    def typed_keys(self, group: str) -> set[str]:
        """Keys of a config group typed on the command line, directly or through a top-level alias (`lr`)."""
        keys = {k.split(".", 1)[1] for k in self.overridden if k.startswith(group + ".")}
        keys |= {k for k, alias in self.interpolated_keys(group).items() if alias in self.overridden}
        if group == "model":
            keys |= {k for k in ("tokenizer", "context_len") if k in self.overridden}
        return keys

    def setup(self, ckpt: dict[str, Any] | None) -> None:
        """Build the five components (from the checkpoint's state where resuming), then what the steps need."""
        components = (ckpt or {}).get("components", {})
        self.settle_architecture(ckpt, components.get("model", {}).get("state_args", {}))
        self.exp_name = self.cfg.exp_name
        self.seed = self.settle_seed(ckpt)
        torch.manual_seed(self.seed)
        self.build_components(components)
        # training's own draws (dropout) from a seed of their own: after the init's draws, an idea with weights of
        # its own (nnmemory's cells) trained with other dropout masks than its baseline at the same seed
        torch.manual_seed(self.seed + 1)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if ckpt and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.check_stage_overrides()
        self.note_run_settings()
        self.note_unread_keys(ckpt is not None)
        self.note_held_out_change(ckpt)
        self.prepare_steps(ckpt)

    def settle_architecture(self, ckpt: dict[str, Any] | None, arch: dict[str, Any]) -> None:
        """The tokenizer and context length: a resumed model's own, which the command line may not change."""
        for key in ("tokenizer", "context_len"):
            if key in arch and key in self.overridden and arch[key] != self.cfg[key]:
                raise ConfigError(f"{key}={self.cfg[key]!r} cannot change on resume: the checkpoint's model has "
                                  f"{key}={arch[key]!r}; use fresh=true to start over")
        if ckpt and ckpt["exp"] != self.cfg.exp_name:
            raise ConfigError(f"the run dir {self.run_dir} holds a checkpoint of experiment {ckpt['exp']!r}, not "
                              f"exp={self.cfg.exp_name}: use exp={ckpt['exp']} to resume it, another run_name, or "
                              f"fresh=true to replace it")
        self.tokenizer = get_tokenizer(arch.get("tokenizer", self.cfg.tokenizer))
        if "vocab_multiple" in self.overridden and arch.get("vocab_size", self.padded_vocab()) != self.padded_vocab():
            raise ConfigError(f"vocab_multiple={self.cfg.vocab_multiple} cannot change on resume: the checkpoint's "
                              f"model has vocab_size={arch['vocab_size']} for the tokenizer's {self.tokenizer.vocab_size}; "
                              f"use fresh=true to start over")
        self.context_len = arch.get("context_len", self.cfg.context_len)
        if isinstance(self.context_len, int) and self.context_len < 2:  # before the model is built with it
            raise ConfigError(f"context_len={self.context_len} is too small for training; use at least 2")

    def build_components(self, components: dict[str, Any], data: bool = True) -> None:
        """model, runner, optimizer, scheduler and curriculum (with `data`), each from its group's config and saved
        state."""
        for group in ("curriculum", "optimizer", "scheduler"):
            config_class(self.cfg, group)  # a user's group file without a _target_, or with a typo in it
        for key in sorted(set(self.cfg.model) & set(RUN_SET_MODEL_KEYS)):  # the run sets them: a typed
            raise ConfigError(not_the_models_to_set(key))  # ++model.KEY would be dropped unsaid
        model_args = {**OmegaConf.to_container(self.cfg.model, resolve=True), "tokenizer": self.cfg.tokenizer,
                      "context_len": self.cfg.context_len, "vocab_size": self.padded_vocab()}

        def part(component, group_cfg):
            saved = components.get(component.name, {})
            try:
                component.construct(group_cfg, saved.get("state_args"), saved.get("state"))
            except Exception as e:
                # a group's target refused a setting (torch's "Invalid learning rate"); a model also sizes its layers
                # cannot be built with (num_heads=0), or a bug in its code (a NameError): one line naming where
                refused = isinstance(e, (InstantiationException, ValueError)) or component.group == "model" and (
                    self.device.type != "meta" or isinstance(e, AssertionError))  # on the meta device (a sweep's
                # check before its jobs) a model that computes at __init__ fails for want of numbers (a TypeError
                # converting one to numpy or text, a RuntimeError reading one): the job's own build says
                if not refused or isinstance(e, LmplayError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise  # HYDRA_FULL_ERROR=1: Hydra's switch for the whole traceback
                raise rejected_settings(component.group, e) from None
            return component

        self.model_c = part(ModelComponent(self), model_args)
        self.runner_c = part(RunnerComponent(self), OmegaConf.to_container(self.cfg.runner, resolve=True))
        self.optimizer_c = part(OptimizerComponent(self), OmegaConf.to_container(self.cfg.optimizer, resolve=True))
        self.scheduler_c = part(SchedulerComponent(self), OmegaConf.to_container(self.cfg.scheduler, resolve=True))
        if data:  # last: it tokenizes its data (minutes for a big dataset), so a mistake in the others is said first
            self.curriculum_c = part(CurriculumComponent(self), OmegaConf.to_container(self.cfg.curriculum,
                                                                                       resolve=True))

    def prepare_steps(self, ckpt: dict[str, Any] | None) -> None:
        """The record window, DDP and compile wrappers, the resumed RNG, then the run dir's stats file."""
        self.window = RecordWindow.resumed(self.runner_c.record_window, self.device, self.world.is_main)
        self.speed = SpeedMeter(self.model.flops_per_token, self.device, self.world.size)
        self.ddp = None
        if self.world.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(LossModule(self.model), device_ids=device_ids)
        self.model.fused_loss = self.cfg.fused_loss
        # compile=true compiles all of loss_terms (the loss fuses with the model); the model stays as it is.
        # Validation runs compiled too (eager, the loss's fp32 copies of the logits took ~5x a compiled training
        # mini-batch's memory for them), never through DDP (whose forward syncs ranks that validate unequal numbers
        # of mini-batches), and from a function of its own: dynamo marks a shape dynamic per function, and held-out
        # batches of other widths made the training graph dynamic too.
        self._compiled = torch_compiled(self.ddp or self.model.loss_terms, self.cfg)
        self._compiled_held_out = torch_compiled(lambda inputs, targets: self.model.loss_terms(inputs, targets),
                                                 self.cfg)
        if ckpt and "rng" in ckpt:
            checkpoint.set_rng_state(ckpt["rng"])  # after the components: constructing them drew random numbers
        # last: a failed start must not touch stats.json; only rank 0 writes files
        self.replaced_dir = set_aside_old_run(self.run_dir) if self.cfg.fresh and self.world.is_main else None
        self.stats = StatsWriter(self.run_dir, self.runner_c.records, write=self.world.is_main,
                                 stage_tags=len(self.curriculum.stages) > 1,
                                 parameters=self.model.trained_parameter_count())
        self._saved: dict[str, tuple[int, ...]] = {}  # checkpoint name -> the progress_state it was saved at
        self._resumed_state = self.progress_state() if ckpt else None  # what the run dir's files hold

    def settle_seed(self, ckpt: dict[str, Any] | None) -> int:
        """The seed the run started with (it orders the data), unless typed on this command line: leaving
        `seed=` off a resuming command must not reorder the rest of the epoch."""
        if ckpt is None or "seed" in self.overridden:
            return self.cfg.seed
        return ckpt.get("seed", self.cfg.seed)

    def note_run_settings(self) -> None:
        """The run's own top-level keys (no component reads them) that differ from conf/config.yaml or come
        from the checkpoint, for the start-of-run report beside the components' settings."""
        defaults = root_config()
        for key in RUN_KEYS:
            value = self.seed if key == "seed" else self.cfg[key]
            if value == defaults[key] and value == self.cfg[key]:
                continue
            source = "command line" if key in self.overridden else "checkpoint" if value != self.cfg[key] else "config"
            self.provenance.add("", key, OmegaConf.to_object(value) if OmegaConf.is_config(value) else value, source)

    def note_held_out_change(self, ckpt: dict[str, Any] | None) -> None:
        """The held-out set is validation_batches x batch_size samples: a resume that changes either measures other
        samples from here on, and the run's validation curve would jump for no change of the model. Measured with
        the current stage's own overrides, which apply before and after alike: the stages after it have no
        validation of this run to compare with, and a stage setting its own batch_size validates as it did."""
        components = (ckpt or {}).get("components", {})
        before = components.get("runner", {}).get("state_args", {})
        after = self.runner_c.settings
        index, own = self.curriculum.stage_index, self.curriculum.stages[self.curriculum.stage_index].overrides
        saved = components.get("curriculum", {}).get("state_args", {}).get("stages") or []  # the stage's overrides
        fits = index < len(saved) and isinstance(saved[index], dict)  # in the checkpoint's plan
        was_own = (saved[index].get("overrides") or {}) if fits else own
        size = {key: was_own.get(key, before.get(key, getattr(after, key)))  # as the checkpoint's plan had them
                for key in ("validation_batches", "batch_size")}
        was = size["validation_batches"] * size["batch_size"]
        batches, batch = (own.get(key, getattr(after, key)) for key in ("validation_batches", "batch_size"))
        if was != batches * batch and self.world.is_main:
            self._held_out_change_noted = True
            print(f"note: validation now holds out validation_batches x batch_size = {batches} x "
                  f"{batch} samples, not {was}: from here on this run's validation loss is measured on "
                  f"other samples (keep runner.validation_batches x batch_size = {was} for a curve that compares)")

    def note_unread_keys(self, resumed: bool) -> None:
        """A key that only some group files read through an interpolation, typed while the chosen one does not,
        changes nothing, yet the run would be labelled by it: say so. A top-level alias (`warmup_fraction`, read as
        ${warmup_fraction} by scheduler=cosine, not by scheduler=constant), or an input of a group's own
        (`curriculum.path`, read by curriculum=text_file, not by the default plan; on a fresh run only: a resumed
        plan comes from its checkpoint)."""
        read = {alias for group in GROUPS for alias in self.interpolated_keys(group).values()}
        for key in sorted(self.overridden - read - set(RUN_KEYS) - {"tokenizer", "context_len", "run_name"}):
            group = key.split(".")[0] if "." in key else None
            chosen_reads = group in GROUPS and "${" + key + "}" in OmegaConf.to_yaml(self.cfg[group], resolve=False)
            if group and (resumed or group not in GROUPS or chosen_reads):
                continue
            readers = [f"{g}={p.stem}" for g in ([group] if group else GROUPS)
                       for p in sorted((Path(CONF_DIR) / g).glob("*.yaml")) if "${" + key + "}" in p.read_text()]
            if readers:
                self.unread_keys.add(key)
            if readers and self.world.is_main:
                why = (f"{', '.join(replaced)} replaces the ${{{key}}} of its file (typed, or set by the exp file)"
                       if (replaced := self.replacing_keys(key)) else
                       f"no config group it uses reads it (it is read by {', '.join(readers)})")
                print(f"note: {key}={OmegaConf.select(self.cfg, key)} changes nothing in this run: {why}")
        if (note := unused_amp_dtype(self.overridden, self.cfg.amp_dtype, self.cfg.amp)) and self.world.is_main:
            print(f"note: {note}")  # the label keeps it: a sweep's jobs stay apart by what they were typed

    def replacing_keys(self, alias: str) -> list[str]:
        """The group keys set in place of the `${alias}` their chosen file reads (`lr=1e-3 optimizer.lr=2e-3`: the
        note said no group read lr, naming optimizer=adamw, the group in use, among its readers)."""
        found = []
        for group in GROUPS:
            found += [f"{group}.{k}={OmegaConf.select(self.cfg, f'{group}.{k}')}"
                      for k, v in chosen_file_values(group).items() if v == "${" + alias + "}"]
        return found

    def padded_vocab(self) -> int:
        """The tokenizer's vocabulary rounded up to `vocab_multiple` (64 makes GPT-2's 50257 a faster 50304)."""
        multiple = self.cfg.vocab_multiple
        if multiple < 1:
            raise ConfigError(f"vocab_multiple={multiple} must be >= 1 (1 = no padding)")
        return -(-self.tokenizer.vocab_size // multiple) * multiple

    @property
    def model(self) -> torch.nn.Module:
        return self.model_c.model

    @property
    def curriculum(self):
        return self.curriculum_c.curriculum

    @cached_property
    def amp_dtype(self) -> torch.dtype | None:
        """Read once: through OmegaConf each read cost ~10 us, and autocast() asks every mini-batch."""
        dtype = amp_dtype(self.cfg.amp_dtype, self.cfg.amp)
        if dtype == torch.float16 and self.device.type != "cuda":  # its GradScaler is CUDA's
            raise ConfigError("amp_dtype=fp16 needs device=cuda; use amp_dtype=bf16 on this device")
        return dtype

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.amp_dtype)

    def one_shape(self, batch: Batch, settings: RunnerSettings, share: int) -> Batch:
        """Under compile=true, `batch` filled up with rows that count nothing to a multiple of the mini-batch its
        full batches are split into (mini_batch_size, or `share`, the samples a full batch gives it, where fewer):
        a shorter mini-batch (a stage's last batch, a batch_size that mini_batch_size does not divide, a held-out
        set's last) recompiled the loss for dynamic shapes, and that graph, the newest, ran every later step; a
        held-out one, run before the first step, made the training graph dynamic too."""
        rows = max(1, min(settings.mini_batch_size, share))
        if self._compiled is None or len(batch) % rows == 0 < len(batch):  # an empty shard (a last batch of fewer
            return batch  # samples than ranks) still runs the loss, for DDP's gradient all-reduce
        return batch.padded(max(1, -(-len(batch) // rows)) * rows)

    def loss_terms(self, inputs: torch.Tensor, targets: torch.Tensor,
                   held_out: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The model's loss terms as (summed cross-entropy, correct count, summed auxiliary loss or None)."""
        return split_terms(self.model_loss_terms(inputs, targets, held_out), type(self.model).__name__)

    def model_loss_terms(self, inputs: torch.Tensor, targets: torch.Tensor, held_out: bool = False) -> Any:
        """One mini-batch's loss terms (a training one through DDP when distributed), compiled with compile=true.
        Where compiling fails (no C++ compiler, an unsupported platform or op), say so once and go on eagerly:
        a compile failure happens before the mini-batch has computed anything."""
        eager = self.model.loss_terms if held_out else self.ddp or self.model.loss_terms
        compiled = self._compiled_held_out if held_out else self._compiled
        if compiled is None:
            return eager(inputs, targets)
        try:
            return compiled(inputs, targets)
        except torch._dynamo.exc.TorchDynamoException as e:
            reason = " ".join(str(e).strip().splitlines()[:2])[:300]  # e.g. "backend='inductor' raised: <error>"
            where = "on this machine"
            fused = self.cfg.fused_loss and triton_loss_runs_on(self.device)
            if fused and "modified by an inplace operation" in reason:
                where = ("for this model: its loss_terms reads the logits after the Triton loss, which, compiled, "
                         "writes its gradient over them (fused_loss=false compiles it with PyTorch's loss)")
            print(f"warning: compile=true failed {where} ({type(e).__name__}: {reason}); training on "
                  f"without compiling (compile=false skips the attempt)", file=sys.stderr)
            self._compiled = self._compiled_held_out = None
            return eager(inputs, targets)

    def check_stage_overrides(self) -> None:
        known = set(RunnerSettings.__dataclass_fields__) | set(STAGE_KEYS_ELSEWHERE)
        for stage in self.curriculum.stages:
            for key in stage.overrides:
                if key not in known:
                    raise ConfigError(f"curriculum stage '{stage.name}' overrides unknown key '{key}'; "
                                      f"valid keys: {', '.join(sorted(known))}")
            for key in ("lr", "weight_decay"):  # checked now, not when the stage starts after hours of the others
                value = stage.overrides.get(key, 0.0)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    raise ConfigError(f"curriculum stage '{stage.name}' overrides {key}={value!r}; it should be a "
                                      f"number >= 0, like 1.0e-4")
            plan = self.stage_plan(stage)
            schedule, base_lr = plan.schedule, plan.base_lr
            if schedule.min_lr > base_lr:  # nanoGPT's absolute min_lr, 6e-5, under a fine-tuning lr
                own = "min_lr" in (stage.overrides.get("scheduler") or {})
                key = "the stage's own scheduler override's min_lr" if own else "scheduler.min_lr"
                fix = f"{base_lr / 10:g} (a tenth) or 0" if base_lr > 0 else "0"
                raise ConfigError(f"{key}={schedule.min_lr:g} is above the lr={base_lr:g} of curriculum stage "
                                  f"'{stage.name}', so its {type(schedule).__name__} schedule would raise the lr as it "
                                  f"decays; set {'it' if own else 'scheduler.min_lr'} to {fix}")

    # -- checkpoints ----------------------------------------------------------------------------------------
    @cached_property
    def settled_config(self) -> DictConfig:
        """The config this run trains with: the composed one, resolved, with what the components settled put
        back. On a resume those are the checkpoint's (its optimizer and schedule, batch sizes, data plan,
        architecture, seed) where this command did not retype them, and the composed config holds this command's
        defaults instead: .hydra/config.yaml and the checkpoint must describe the run, not the last command."""
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        for component in (self.model_c, self.runner_c, self.optimizer_c, self.scheduler_c, self.curriculum_c):
            group, schema = cfg[component.group], component.advertise()
            target = getattr(component, "target", group.get("_target_"))
            if target != group.get("_target_"):
                # the class the run was built with: none of the composed keys apply. Its keys are those of its own
                # file (sgd.yaml), as a fresh run of it writes them, or, for a class of no file of lmplay's, all
                listed = group_file_keys(component.group, target)
                keys = [key for key in listed or component.args if key in component.args]
                group = cfg[component.group] = {"_target_": target, **dict.fromkeys(keys)}
            for key, value in component.args.items():
                if key in component.reported_as:  # the model's tokenizer, context_len: top-level keys
                    if component.reported_as[key]:
                        cfg[component.reported_as[key]] = value
                elif key in group or not same(value, schema.get(key)):
                    group[key] = value
            for key, alias in self.interpolated_keys(component.group).items():  # `lr: ${lr}`: the alias says it too
                if alias in cfg and key in group:
                    cfg[alias] = group[key]
        cfg["seed"] = self.seed
        return OmegaConf.create(cfg)

    @cached_property
    def config_yaml(self) -> str:
        """The settled config, for `lmplay.inspect`; built once (~20 ms) because the runner never changes it."""
        return OmegaConf.to_yaml(self.settled_config)

    def archive(self) -> dict[str, Any]:
        parts = (self.curriculum_c, self.model_c, self.runner_c, self.optimizer_c, self.scheduler_c)
        return {"exp": self.exp_name, "seed": self.seed, "config": self.config_yaml,
                "components": {c.name: c.archive() for c in parts}, "rng": checkpoint.rng_state(),
                "scaler": self.scaler.state_dict()}

    def save(self, name: str = CHECKPOINT) -> Path:
        """Write a checkpoint, unless the file already holds this very state (the save interval and the end
        of the run on one step; a rerun of a finished run): `.bak` stays the checkpoint before it."""
        path = self.run_dir / name
        state = self.progress_state()
        if self._saved.get(name, self._resumed_state if path.exists() else None) == state:
            return path
        # a step between loss reads (log_interval > 1) blew up
        if name != CORRUPTED and not all_finite(self.model.parameters()):
            self.diverged(f"the weights are NaN or inf at step {self.runner_c.progress['step']}",
                          self.curriculum.stages[self.curriculum.stage_index].name)
        self.runner_c.record_window = self.window.totals(self.world)  # a record's steps that span the save
        if self.world.is_main:
            self.stats.flush()
            checkpoint.save(self.archive(), path)
            if self.on_first_save is not None and self.trained_now:
                self.on_first_save, label = None, self.on_first_save
                label()
        self._saved[name] = state
        return path

    @property
    def trained_now(self) -> bool:
        """Whether this command has trained a step (a resume that only records what a stop left undone has not)."""
        return self._resumed_state is None or self.runner_c.progress["step"] > self._resumed_state[0]

    def diverged(self, what: str, stage: str, untrained: bool = False) -> None:
        """Stop a run whose loss or weights are no longer finite: dump them for inspection and say which
        checkpoint is good (every save checks its weights, so model.lmp, where there is one, is)."""
        self.save(CORRUPTED)
        good = ("model.lmp is the last good checkpoint" if (self.run_dir / CHECKPOINT).is_file() else
                "no good checkpoint was saved yet, so a rerun starts over")
        fix = ("no optimizer step had changed the weights yet, so the model's forward makes it: check its code, or "
               "try amp=false" if untrained or self.runner_c.progress["step"] == 0 else
               "try a lower lr or grad_clip=1.0")
        raise DivergedError(f"{what} (stage {stage}); wrote {CORRUPTED} for inspection, {good}; {fix}")

    def progress_state(self) -> tuple[int, ...]:
        """What a checkpoint's training state comes down to: equal tuples, equal checkpoints."""
        p, records = self.runner_c.progress, self.stats.records
        return (p["step"], p["stage_step"], self.curriculum.stage_index, len(records["train"]),
                len(records["validation"]))

    # -- training -------------------------------------------------------------------------------------------
    def train_step(self, batch: Batch, settings: RunnerSettings) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `batch`, accumulated in mini-batches so it equals one big batch.

        Returns this rank's share of the batch's summed loss and correct count (on one process: all of it).
        Under DDP each rank takes its share of the samples; gradients are all-reduced only on the
        last mini-batch, and scaling by the world size turns DDP's average back into the batch's sum.
        """
        optimizer = self.optimizer_c.optimizer
        total_tokens = max(batch.num_tokens, 1)
        scale = total_tokens / self.world.size  # DDP averages gradients over ranks; the batch's loss is their sum
        non_blocking = self.device.type == "cuda"
        if self.world.distributed:
            torch.manual_seed(rank_step_seed(self.seed, self.runner_c.progress["step"], self.world.rank))
        shard = self.one_shape(batch.shard(self.world.rank, self.world.size), settings,
                               settings.batch_size // self.world.size)
        minis = (shard.pin_memory() if non_blocking else shard).split(settings.mini_batch_size)
        for i, mini in enumerate(minis):
            mini = mini.to(self.device, non_blocking)
            sync = self.ddp is None or i == len(minis) - 1
            with nullcontext() if sync else self.ddp.no_sync():
                with self.autocast():
                    loss_sum, correct, aux = self.loss_terms(mini.inputs, mini.targets)
                self.scaler.scale((loss_sum if aux is None else loss_sum + aux) / scale).backward()
            if aux is not None:  # a NaN or inf aux loss trains NaN into the weights: it makes the recorded loss NaN,
                loss_sum = loss_sum + aux.detach() * 0  # which stops the run as diverged; a finite one adds 0
            if i == 0:
                loss_total, correct_total = loss_sum.detach(), correct
            else:
                loss_total, correct_total = loss_total + loss_sum.detach(), correct_total + correct
        if settings.grad_clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss_total, correct_total

    @torch.no_grad()
    def validate(self, settings: RunnerSettings) -> dict[str, float] | None:
        """Loss and accuracy on the stage's fixed held-out batches; None when the stage holds none out.

        `validation_batches` batches of `batch_size` samples, run in mini-batches: the held-out set is the
        same whatever mini_batch_size a run needs, so runs that differ only in it compare."""
        held = self.curriculum.validation_batches(settings.validation_batches, settings.batch_size,
                                                  settings.include_prompts)
        size = settings.mini_batch_size
        minis = [mini for batch in held for mini in self.one_shape(batch, settings, settings.batch_size).split(size)]
        if not minis:
            return None
        model = self.model
        model.eval()
        losses, corrects, tokens = [], [], 0
        for batch in minis[self.world.rank::self.world.size]:
            batch = batch.to(self.device)
            with self.autocast():
                ls, c, _ = self.loss_terms(batch.inputs, batch.targets, held_out=True)
            losses.append(ls.clone())  # read once at the end: no wait for the GPU between batches (copies: CUDA
            corrects.append(c.clone())  # graphs, compile_options' triton.cudagraphs, reuse their outputs' memory)
            tokens += batch.num_tokens
        loss_sum = float(torch.stack(losses).cpu().double().sum()) if losses else 0.0  # MPS has no float64
        correct = int(torch.stack(corrects).sum()) if corrects else 0
        loss_sum, correct, tokens = self.world.sum(loss_sum, correct, tokens)
        model.train()
        if tokens == 0:  # held-out rows whose answers do not fit: no number beats a loss of 0 over nothing
            return None
        # held_out_tokens: what the loss is measured on, which batch_size and context_len change; comparisons say so
        return {"loss": loss_sum / tokens, "accuracy": correct / tokens, "held_out_tokens": int(tokens)}  # summed as floats

    def validation_record(self, stage: str, lr: float, settings: RunnerSettings) -> None:
        """Validate and record (nothing when the plan holds nothing out)."""
        values = self.validate(settings)
        if values is not None and not math.isfinite(values["loss"]):
            self.diverged(f"validation loss became {values['loss']} at step {self.runner_c.progress['step']}", stage)
        held_out = self.curriculum.held_out_rows()
        if values is None and held_out and stage not in self._no_validation_noted and self.world.is_main:
            self._no_validation_noted.add(stage)
            print(f"note: stage {stage!r} holds {held_out} rows out for validation, but they make no validation batch "
                  f"({self.curriculum.stages[self.curriculum.stage_index].batching} batching, context_len="
                  f"{self.context_len}, include_prompts={str(settings.include_prompts).lower()}: too few tokens for "
                  f"a window, or no answer inside one), so it records no validation loss; hold out more rows "
                  f"(curriculum.validation_fraction=...) or use rows batching")
        if values is not None:
            self.note_other_held_out_set(stage, values["held_out_tokens"])
            self.record("validation", stage, lr, values)
            self.display.validation(stage, self.runner_c.progress["step"], values)
            self.note_part_held_out(stage, values["held_out_tokens"], settings)

    def note_part_held_out(self, stage: str, tokens: int, settings: RunnerSettings) -> None:
        """Once a stage a command: its validation measures part of the rows it holds out ("37 held out" at the start,
        then a loss over the first windows of two of them)."""
        if stage in self._part_held_out_noted or not self.world.is_main or not self.curriculum.held_out_beyond(
                settings.validation_batches, settings.batch_size, settings.include_prompts):
            return
        self._part_held_out_noted.add(stage)
        rows = self.curriculum.held_out_rows()
        print(f"note: validation of stage {stage!r} measures {tokens:,} tokens (runner.validation_batches="
              f"{settings.validation_batches} batches of {settings.batch_size}) of the {rows:,} rows it holds out, "
              f"which make more; a larger runner.validation_batches measures more of them (each validation then "
              f"takes longer)")

    def note_other_held_out_set(self, stage: str, tokens: int) -> None:
        """A held-out set of another size than the stage's earlier validations (before a resume: the data changed,
        or how lmplay draws it) measures other samples: the curve would jump for no change of the model."""
        earlier = [r.get("held_out_tokens") for r in self.stats.records["validation"] if r["stage"] == stage]
        if earlier and earlier[-1] not in (None, tokens) and not self._held_out_change_noted and self.world.is_main:
            self._held_out_change_noted = True
            print(f"note: stage {stage!r} now validates on {tokens:,} held-out tokens, where this run's earlier "
                  f"validations used {earlier[-1]:,} (its data, or how lmplay draws the held-out rows, changed): from "
                  f"here on its validation loss is measured on other samples")

    def record(self, kind: str, stage: str, settings_lr: float, values: dict[str, float],
               at: dict[str, int] | None = None) -> None:
        """A stats record at progress `at` (default: now)."""
        p = at or self.runner_c.progress
        self.stats.add(kind, {"stage": stage, "step": p["step"], "samples": p["samples"], "tokens": p["tokens"],
                              **values, "lr": settings_lr})

    def train(self) -> None:
        """Run the remaining stages; save on a stop signal (stopping.stop_signals()), at the save interval, at each
        stage end and at the end."""
        try:
            with self.stop.handled():
                self._train_stages()
        finally:
            in_flight = sys.exc_info()[1] is not None  # what stopped the run says why; a failed last write must not
            with contextlib.suppress(OutputError) if in_flight else nullcontext():  # replace it
                self.stats.close()

    def close(self) -> None:
        """Leave torchrun's process group, all ranks together. DDP's reducer holds the group: freed only at
        interpreter exit, gloo's worker threads can abort a rank that finished ('terminate called without an
        active exception', SIGABRT) and fail the run, so the wrapper goes first, while the interpreter is whole."""
        if self.world.distributed:
            self.ddp = self._compiled = None
            gc.collect()  # the runner's reference cycles keep the wrapper alive otherwise
        self.world.close()

    def _stop(self) -> None:
        """Save, leave the process group (every rank stops after the same step: World.any) and exit."""
        path = self.save()
        self.close()
        self.stop.stopped(path, self.runner_c.progress["step"], self.resume_hint)

    def nothing_to_train(self, in_sweep: bool = False) -> str | None:
        """Why a resumed run has no step to train (max_steps at or below its step, or its whole curriculum trained),
        or None. A sweep's job says so in a few words: a sweep rerun with the same values (to resume its
        unfinished jobs) meets every finished one, and a larger max_steps names new jobs, not these."""
        step, max_steps = self.runner_c.progress["step"], self.cfg.max_steps
        closed = any(r["step"] == step for r in self.stats.records["validation"][-1:])  # a stop on the last step
        if not closed:  # saved before its closing validation: still to do
            return None
        if self.curriculum.finished:
            last = self.curriculum.stages[-1]
            if in_sweep:
                return f"finished before: trained through its curriculum (step {step}); nothing to train"
            return (f"the run has trained through its curriculum (its last stage, {last.name!r}, ended at step "
                    f"{step}), so there is nothing to train; a longer plan goes on (a stage's steps, tokens or epochs "
                    f"raised, or a stage added), and a new run_name trains these settings from the start")
        if max_steps is None or step < max_steps:
            return None
        if in_sweep:
            return f"finished before: at step {step} of max_steps={max_steps}; nothing to train"
        return (f"max_steps={max_steps}: the run is already at step {step}, so there is nothing to train; a larger "
                f"max_steps goes on")

    def _train_stages(self) -> None:
        progress = self.runner_c.progress
        if (why := self.nothing_to_train()) is not None:
            print(why)
        if progress["step"] == 0 and not self.stats.records["validation"]:  # the untrained baseline of every curve
            stage = self.curriculum.stages[self.curriculum.stage_index]
            self.validation_record(stage.name, 0.0, self.stage_plan(stage).settings)
        while True:
            stage = self.curriculum.stages[self.curriculum.stage_index]
            finished = self._train_stage(stage)
            if self.stop.signum is not None:
                self._stop()
            if not finished:
                break
            self.save(f"model.{stage.name}.lmp")
            if not self.curriculum.advance_stage():
                break
            progress["stage_step"] = 0
            self.save()  # the run resumes here, whatever happens to the next stage before its first save
        self.save()
        print(f"done: step {progress['step']}, {progress['tokens']:,} tokens{self.last_validation()}; checkpoint "
              f"{self.run_dir / CHECKPOINT}")

    def last_validation(self) -> str:
        """The run's last validation loss, for its closing line: a terminal's bar shows a validation only with the
        record after it, and the closing validation has none."""
        records = self.stats.records["validation"]
        if not records:
            return ""
        last, step = records[-1], self.runner_c.progress["step"]
        return f", validation loss {last['loss']:.4f}" + (f" (at step {last['step']})" if last["step"] != step else "")

    def stage_plan(self, stage) -> StagePlan:
        """The settings, lr schedule, lr and weight decay a stage trains with: the run's, under its overrides."""
        overrides = stage.overrides
        try:
            schedule = self.scheduler_c.for_stage(overrides.get("scheduler"))
        except ConfigError as e:  # the key came from the curriculum's file, not from anything typed
            raise ConfigError(f"curriculum stage '{stage.name}' (its overrides' scheduler): {e}") from None
        return StagePlan(self.runner_c.stage_settings(overrides, stage.name, self.world.size), schedule,
                         overrides.get("lr", self.optimizer_c.base_lr),
                         overrides.get("weight_decay", self.optimizer_c.args["weight_decay"]))

    def _train_stage(self, stage) -> bool:
        """Train one stage; True when the stage ran to its end, False when max_steps or a signal stopped it."""
        plan = self.stage_plan(stage)
        settings = plan.settings
        self.optimizer_c.set_weight_decay(plan.weight_decay)
        self.note_stage_wins(stage)
        progress = self.runner_c.progress
        whole, max_steps = self.stage_steps(stage, settings), self.cfg.max_steps
        total = whole
        if max_steps is not None:
            total = min(whole, progress["stage_step"] + max(max_steps - progress["step"], 0))
        self.note_long_warmup(stage.name, plan, total)
        self.note_rows_dropped(stage, settings)
        self.note_schedule_change(plan, total)
        self.validate_stage_start(stage.name, plan, total)
        self.display.stage_started(stage.name, progress["stage_step"], total, capped=total < whole)
        try:
            finished = self._run_steps(stage, plan, total)
        finally:
            self.display.stage_ended()
        last = self.stats.records["validation"][-1:]
        validated_now = bool(last) and last[0]["step"] == progress["step"]
        # also where no step trained now: a stop signal on a stage's (or the run's) last step saved before this
        # validation, and the resume that finds the stage at its end records it
        if self.stop.signum is None and not validated_now:  # at the lr of the stage's last step: a resume that
            trained = self.stats.records["train"][-1:]  # trains nothing takes it from the record of that step, not
            lr = plan.lr(max(progress["stage_step"] - 1, 0), total)  # from its own settings (lr=... typed anew)
            if not self.trained_now and trained and trained[0]["step"] == progress["step"]:
                lr = trained[0]["lr"]
            self.validation_record(stage.name, lr, settings)
        return finished

    def validate_stage_start(self, name: str, plan: StagePlan, total: int) -> None:
        """A later stage's first validation, on its own held-out rows, before it trains: its curve starts where the
        stage does, beside the last stage's closing point on other rows. Its first point had been an interval in,
        and the line from the stage before (whose held-out text differs) drew the data's change as the model's."""
        if self.stop.signum is not None:  # a stop signal in the last stage's end save: the resume validates it
            return
        progress, last = self.runner_c.progress, self.stats.records["validation"][-1:]
        if progress["stage_step"] == 0 and progress["step"] > 0 and (not last or last[0]["stage"] != name):
            self.validation_record(name, plan.lr(0, total), plan.settings)

    def stage_steps(self, stage, settings: RunnerSettings) -> int:
        """The stage's optimizer steps at this batch: counted over the whole stage, except where a resume changed
        the batch (or include_prompts) or the data inside it: then the steps trained plus the rest of the stage's
        data at the new batch, in proportion to what is left of it (a stage counted whole at the new batch was as
        long as if it had trained at that batch from its start: its bar, ETA and lr schedule ran past its real end;
        one kept from before its data grew 3x decayed its lr to the end 150 steps before the stage's)."""
        progress = self.runner_c.progress
        key, batch = f"{stage.name}|{stage.length}", [settings.batch_size, settings.include_prompts]
        data = self.curriculum.data_key()
        counted = progress.get("stage_count") if progress["stage_step"] else None
        counted = counted if isinstance(counted, dict) and counted.get("stage") == key else None
        if counted is not None and counted["batch"] == batch and counted.get("data", data) == data:  # none: older
            steps = counted["steps"]
        else:
            steps = self.curriculum.estimate_stage_steps(settings.batch_size, settings.include_prompts)
            if counted is not None:
                left = 1.0 - self.curriculum.stage_fraction_done()
                steps = progress["stage_step"] + math.ceil(steps * left)
        progress["stage_count"] = {"stage": key, "batch": batch, "data": data, "steps": steps}
        return steps

    def note_long_warmup(self, stage_name: str, plan: StagePlan, steps: int) -> None:
        """A warmup_steps as long as the steps its schedule spans (1000 on a stage of 180 steps, or on a run that
        max_steps stops at 400) never reaches the lr: said as the stage starts."""
        warmup = plan.schedule.warmup(steps)
        if 0 < steps <= warmup and self.runner_c.progress["stage_step"] == 0 and self.world.is_main:
            print(f"note: the lr schedule warms up over {warmup:,} steps and stage {stage_name!r} trains {steps:,} "
                  f"here: its lr climbs to {plan.lr(steps - 1, steps):.3g} and never reaches lr={plan.base_lr:.3g}; "
                  f"set scheduler.warmup_steps below {steps:,}, or scheduler.warmup_fraction")

    def note_rows_dropped(self, stage, settings: RunnerSettings) -> None:
        """Rows batching drops what of a long row does not fit in its batch: an epoch of long documents trained a
        few percent of their tokens while the run said "1.0 epochs". Said as the stage starts."""
        share = self.curriculum.trained_share
        if share is not None and share < 0.9 and self.runner_c.progress["stage_step"] == 0 and self.world.is_main:
            print(f"note: stage {stage.name!r} trains {share:.0%} of the tokens of the rows it reads: in rows "
                  f"batching, what of a row does not fit in its batch (batch_size={settings.batch_size}) is dropped; "
                  f"batching: packed trains all of them (curriculum.batching=packed)")

    def note_stage_wins(self, stage) -> None:
        """Inside a stage its own overrides win over the run's values, typed ones too (the curriculum asked
        for them there): a value typed on this command line that a stage shadows would otherwise look applied."""
        typed = self.typed_keys("optimizer") | self.typed_keys("runner")
        shadowed = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"  # as typed: false, not False
                    for key, value in stage.overrides.items() if key in typed]
        if shadowed and self.world.is_main:
            print(f"note: curriculum stage {stage.name!r} sets {', '.join(shadowed)} itself; what you typed for "
                  f"{'them' if len(shadowed) > 1 else 'it'} applies to the stages without their own")

    def note_schedule_change(self, plan: StagePlan, total: int) -> None:
        """The lr schedule spans the stage's steps, capped by max_steps: a resume that changes them (a larger
        max_steps, another batch_size) re-spans the rest of the schedule. Say so when it moves the lr."""
        progress = self.runner_c.progress
        before, step = progress.get("stage_total"), progress["stage_step"]
        progress["stage_total"] = total
        if before is None or before == total or step == 0 or not self.world.is_main:
            return
        was, now = plan.lr(step, before), plan.lr(step, total)
        if not math.isclose(was, now, rel_tol=1e-6):
            digits = next(d for d in range(3, 17) if f"{now:.{d}g}" != f"{was:.{d}g}")  # not "0.00299, not 0.00299"
            print(f"note: this stage's lr schedule now spans {total:,} steps, not {before:,} (max_steps or the "
                  f"batch changed): its next step trains at lr {now:.{digits}g}, not {was:.{digits}g}")
            with contextlib.suppress(ConfigError, OutputError):  # max_steps is no trained setting: the plot said
                # nothing of it; a note it cannot write must not stop training
                record_resumed_change(self.run_dir / ".hydra", progress["step"],
                                      {"lr schedule's steps": [before, total]})

    def _run_steps(self, stage, plan: StagePlan, total: int) -> bool:
        """Train steps until the stage ends (True), or max_steps or a signal stops it (False).

        On an accelerator a step's loss is read only once the next step's work is queued, so the host
        prepares step k+1 while step k computes instead of waiting for it (StepLog waits for step k alone,
        so tokens/s stays per step); whatever must see the step (a validation, a save, the
        end) reads it first. A CPU computes as it goes, so there each step is read at once.
        """
        progress, max_steps, settings = self.runner_c.progress, self.cfg.max_steps, plan.settings
        defer = self.defer_reads
        self.speed.restart(progress["tokens"])
        first_step = progress["step"]
        pending: StepLog | None = None
        finished = False
        while max_steps is None or progress["step"] < max_steps:
            if self.world.any(self.stop.signum is not None):  # all ranks stop after the same step
                self.stop.stopped_elsewhere()
                break
            batch = self.curriculum.next_batch(settings.batch_size, settings.include_prompts)
            if batch is None and progress["stage_step"] == 0:  # not a stage that trained: one that cannot
                raise self.no_batch_error(stage, self.curriculum.skipped_windows)
            if batch is None:
                finished = True
                break
            lr = plan.lr(progress["stage_step"], total)
            self.optimizer_c.set_lr(lr)
            loss, correct = self.train_step(batch, settings)
            self.window.add(loss, correct, batch.num_tokens, lr)
            samples_before = progress["samples"]
            progress["step"] += 1
            progress["stage_step"] += 1
            progress["samples"] += len(batch)
            progress["tokens"] += batch.num_tokens
            self.speed.add(batch)
            self.log_step(pending)  # the previous step's, now that this one is queued
            pending = None
            if progress["step"] % settings.log_interval == 0:  # a record of the steps since the last one
                pending, self.window = self.step_log(stage.name, lr, self.window), RecordWindow()
            validate = crossed(samples_before, progress["samples"], settings.validation_interval)
            save = crossed(samples_before, progress["samples"], settings.save_interval)
            if not defer or validate or save:  # a validation or save must see this step (a NaN stops first)
                self.log_step(pending)
                pending = None
            self.display.step_done()
            if progress["step"] == first_step + 1:
                self.display.first_step_done(progress["stage_step"], total)
            if validate or save:
                self.pause_for(validate, save, stage.name, lr, settings)
        self.end_steps(stage.name, plan, total, pending, first_step)
        return finished

    def pause_for(self, validate: bool, save: bool, stage_name: str, lr: float, settings: RunnerSettings) -> None:
        """A validation and/or a save between two steps, left out of training's tokens/s."""
        synchronize(self.device)  # the step's queued work is training's, not the pause's: let it finish
        with self.speed.paused():
            if validate:
                self.validation_record(stage_name, lr, settings)
            if save:
                self.save()

    def end_steps(self, stage_name: str, plan: StagePlan, total: int, pending: StepLog | None,
                  first_step: int) -> None:
        """The last step's read, a record of the steps short of a log_interval, and the closing progress line."""
        progress = self.runner_c.progress
        self.log_step(pending)
        if self.window.steps and self.stop.signum is None:  # the last steps, short of a log_interval (a stop signal's
            lr = self.window.lr  # save keeps them: the resume goes on with them)
            if lr is None:  # a window resumed from an older checkpoint: the schedule's lr of the stage's last step
                lr = plan.lr(max(progress["stage_step"] - 1, 0), total)
            self.log_step(self.step_log(stage_name, lr, self.window))
            self.window = RecordWindow()
        records = self.stats.records["train"]
        if records and records[-1]["step"] > first_step:  # not one from before a resume, or of the stage before: a
            self.show_progress(last=True)  # stop signal leaves a window short of log_interval unrecorded
        if self.curriculum.skipped_windows and self.world.is_main:
            print(f"note: stage {stage_name!r} skipped {self.curriculum.skipped_windows} windows with no target token "
                  f"since this command started (include_prompts=false and prompts that fill the "
                  f"context_len={self.context_len} window)")

    def no_batch_error(self, stage, skipped: int) -> ConfigError:
        """Why a stage gave no batch at its first step."""
        if skipped:
            return ConfigError(f"curriculum stage {stage.name!r} gives no batch with a target token: with "
                               f"include_prompts=false its rows' prompts fill the context_len={self.context_len} "
                               f"window and leave no answer; use a larger context_len or include_prompts=true")
        rows = (f"curriculum.stages.{self.curriculum.stage_index}.batching=rows" if stage.own_batching else
                "curriculum.batching=rows")  # the stage's own `batching:`, which the plan's does not change
        return ConfigError(f"curriculum stage {stage.name!r} gives no training batch: with {stage.batching} "
                           f"batching its data is shorter than one window of context_len+1 = {self.context_len + 1} "
                           f"tokens; use a smaller context_len, more data, or {rows}")

    def step_log(self, stage: str, lr: float, window: RecordWindow) -> StepLog:
        """A record of the steps in `window`, at the run's progress now."""
        at = {k: self.runner_c.progress[k] for k in ("step", "samples", "tokens")}
        return StepLog.start(stage, lr, at, window.loss, window.correct, window.tokens, window.steps,
                             self.speed.flops_done)

    def log_step(self, log: "StepLog | None") -> None:
        """Read a step's loss and accuracy from the device, stop on NaN/Inf, and record them with tokens/s
        over the time since the last record."""
        if log is None:
            return
        loss_sum, correct = self.world.sum(*log.read())
        loss_value = loss_sum / log.num_tokens
        if not math.isfinite(loss_value):
            when = "at" if log.steps == 1 else f"in the {log.steps} steps up to"
            self.diverged(f"loss became {loss_value} {when} step {log.at['step']}", log.stage,
                          untrained=log.at["step"] == log.steps == 1)  # a fresh run's first step: initial weights
        speed = self.speed.read(log.at["tokens"], log.flops)
        with self.speed.paused() if not self.stats.events_open else nullcontext():  # tensorboard's import and a new
            self.record("train", log.stage, log.lr,  # event file, at the first record: once a run, not a step's
                        {"loss": loss_value, "accuracy": correct / log.num_tokens, **speed}, log.at)
        self.show_progress()

    def show_progress(self, last: bool = False) -> None:
        self.display.show(self.stats.records, self.runner_c.progress["stage_step"], last)


def crossed(before: int, after: int, interval: int) -> bool:
    """True when a multiple of `interval` lies in (before, after]."""
    return after // interval > before // interval
