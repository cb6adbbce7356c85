"""Finding and reading run directories: what the sweep summary and the plots share.

A run directory is any directory holding a `stats.json` (see the README's "Where outputs go"); its
`.hydra/` says which experiment and which command-line overrides produced it. A sweep directory
holds one run directory per job, named by its overrides (`exp=gpt2ish,seed=1`).
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmplay.config import (
    NoAliasLoader,
    flatten,
    override_key,
    override_value,
    top_level_aliases,
)
from lmplay.errors import ConfigError
from lmplay.files import CHECKPOINT, RECORD_KINDS, REPLACED_PREFIX, STATS, write_atomic

# Why runs validate on different held-out text: the set is runner.validation_batches batches of batch_size of the
# curriculum's held-out rows, framed at context_len (nested samples of the same rows). plot's table and the
# sweep summary say it.
HELD_OUT_CAUSE = ("the curriculum (its data, validation_fraction, validation_seed), batch_size, "
                  "runner.validation_batches, context_len or include_prompts change which held-out samples a loss is "
                  "measured on")
SIZE_CAUSE = ("a lower loss can be the larger model's; compare ideas at equal size (a narrower or shallower "
              "config of the larger), or count its size as the idea's cost")


def sizes_differ(counts: list[int | None]) -> bool:
    """Models more than 1% apart in parameters: an idea's own few (a temperature a head) are no size of note, a
    memory or a second embedding table (+20-100%) is."""
    known = [c for c in counts if c]
    return bool(known) and max(known) > 1.01 * min(known)

# Overrides that do not change what is trained: runs that differ only in these are repeats of one configuration.
REPEAT_KEYS = ("seed", "fresh", "device", "run_name")
# How a run ran, not what it trained: an idea compiled, or with a padded vocabulary, still matches its baseline.
HOW_IT_RAN = ("exp", "compile", "compile_options", "vocab_multiple", "device")
# How long a run went and how often it recorded: what a baseline may differ in where none matches it exactly.
NOT_SETTINGS = (*HOW_IT_RAN, "max_steps", "runner.log_interval", "runner.validation_interval",
                "runner.save_interval")
# A run's settled config beside what it trained with: its names, what repeats differ in, and settings that leave
# the trained model as it is (a mini-batch accumulates to the same batch; a fused kernel computes the same loss).
NOT_TRAINED = (*NOT_SETTINGS, *REPEAT_KEYS, "exp_name", "fused_loss", "runner.mini_batch_size", "optimizer.fused",
               "runner.validation_batches", "curriculum.cache_dir", "curriculum.tokenize_procs")


@dataclass
class Run:
    path: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    exp: str | None = None
    tokenizer: str | None = None  # a loss per token compares only between runs of one tokenizer
    settled: dict[str, Any] = field(default_factory=dict)  # .hydra/config.yaml, flat (optimizer.lr: 0.001)
    choices: dict[str, str] = field(default_factory=dict)  # each config group's file (optimizer: adamw), typed or not
    resumed_changes: list[dict[str, Any]] = field(default_factory=list)  # settings a resume changed, at its step
    parameters: int | None = None  # the model's count (stats.json's; None in runs from before it kept one)

    @property
    def config(self) -> tuple[str, ...]:
        return configuration(self.overrides)

    @property
    def seed(self) -> str | None:
        """The seed typed for the run (None: conf/config.yaml's)."""
        return override_value(self.overrides, "seed")

    @property
    def trained_seed(self) -> str | None:
        """The seed the run trained with: one left at its default (1337) and one typed as 1337 are the same run."""
        return str(self.settled["seed"]) if "seed" in self.settled else self.seed

    @property
    def final_validation(self) -> dict[str, Any] | None:
        return self.validation[-1] if self.validation else None

    @property
    def tokens(self) -> int:
        return max((r["tokens"] for r in self.train + self.validation), default=0)

    @property
    def steps(self) -> int:
        return max((r["step"] for r in self.train + self.validation), default=0)


def configuration(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that define what was trained: the same for every seed of one configuration."""
    return tuple(sorted(o for o in overrides if override_key(o) not in REPEAT_KEYS))


def natural_order(path: Path) -> tuple:
    """Natural order, so job 10 comes after job 9: `10_exp=a` sorts by (10, "_exp=a")."""
    return tuple((int(p), s) if p else (float("inf"), s)
                 for p, s in (re.match(r"(\d*)(.*)", part).groups() for part in path.parts))


def job_number(run_dir: Path) -> int | None:
    """The job's number in its sweep (None outside a sweep). A job dir is named by its overrides alone, so its name
    does not give the sweep's order. The sweep's job.json, which each run of the sweep rewrites, names its place in
    the sweep as last run: Hydra's hydra.job.num in .hydra/hydra.yaml is of the run that trained it (a sweep rerun
    with a new baseline first, `exp=a,b` after `exp=b`, kept b's 0, and the plots took b for the baseline; a job
    trained on by a single run has that run's)."""
    # the sweep's own record, imported here: lmplay.sweep reads runs through this module
    from lmplay.sweep import read_job

    num = read_job(run_dir).get("job")
    if num is None:  # a sweep from before job.json
        try:
            hydra = dig(read_yaml(run_dir / ".hydra" / "hydra.yaml"), "hydra")
        except ConfigError:  # damaged: the run's own load says so; the order puts it last
            hydra = None
        num = dig(hydra, "job", "num") if dig(hydra, "mode") == "MULTIRUN" else None
    return num if isinstance(num, int) and not isinstance(num, bool) else None


def job_order(root: Path, run_dir: Path) -> tuple:
    """Sweep by sweep (natural order of their dirs), and within a sweep by job number: job 0, the first value of
    `exp=`, is the baseline the plots compare with."""
    relative = run_dir.relative_to(root)
    number = job_number(run_dir)
    return natural_order(relative.parent), number is None, number or 0, natural_order(relative)


def find_run_dirs(path: Path) -> list[Path]:
    """`path` itself when it is a run dir, else every run dir below it (a sweep, a tree of sweeps), in job order."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} does not exist or is not a directory")
    if (path / STATS).is_file():
        return [path]
    found = dirs_below(path, (STATS,))
    if not found:
        raise ConfigError(f"{path} has no {STATS}: it is neither a run dir nor a sweep dir of lmplay runs")
    return found


def dirs_below(root: Path, markers: tuple[str, ...]) -> list[Path]:
    """The directories below `root`, at any depth (an override value holding a '/' nests a job dir), that hold
    one of `markers`, in job order; hidden dirs such as .hydra/ or submitit's logs are skipped, and so is what
    fresh=true set aside (replaced_<time>/: a run the one beside it replaced)."""
    found = {p.parent for marker in markers for p in root.rglob(marker)
             if p.parent != root and not any(part.startswith((".", REPLACED_PREFIX))
                                             for part in p.parent.relative_to(root).parts)}
    return sorted(found, key=lambda p: job_order(root, p))


def read_yaml(path: Path, kind: type = dict) -> Any:
    """A .hydra/ file's contents (None when it is missing), a mapping or a list (`kind`); a damaged or mis-shaped one
    is a ConfigError naming it (`hydra: [1, 2]` was an AttributeError that stopped the plot of every run)."""
    try:
        value = yaml.load(path.read_text(), Loader=NoAliasLoader) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{path} cannot be read: {' '.join(str(e).split())[:200]}") from None
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{path} cannot be read: it holds a {type(value).__name__}, not a "
                          f"{'mapping' if kind is dict else 'list'}")
    return value


def record_resumed_change(hydra_dir: Path, step: int, changed: dict[str, list[Any]]) -> None:
    """Append a resume's changes of what is trained to RESUMED_CHANGES: the plot's and summary's note that the run's
    curve mixes settings. Once: a resume of the same checkpoint again (after a crash) changes the same. A damaged
    file (ConfigError) or one that cannot be written (OutputError) is the caller's to leave as it is."""
    earlier = read_yaml(hydra_dir / RESUMED_CHANGES, list) or []
    entry = {"step": step, "changed": changed}
    if entry not in earlier:
        hydra_dir.mkdir(parents=True, exist_ok=True)  # a run dir whose .hydra/ was deleted: its label comes later
        write_atomic(hydra_dir / RESUMED_CHANGES, yaml.safe_dump([*earlier, entry], sort_keys=False))


def dig(value: Any, *keys: str) -> Any:
    """value[key][key]..., or None where a level is missing or is not a mapping."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def is_finite_number(value: Any) -> bool:
    """A JSON number a float holds: `1e400` tokens were an OverflowError in the plots."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def valid_record(record: Any) -> bool:
    """A record the plots and the summary can read: counters that are numbers, a loss, accuracy and held-out token
    count that are numbers or null."""
    if not isinstance(record, dict) or "loss" not in record:
        return False
    return (all(is_finite_number(record.get(k)) for k in ("step", "samples", "tokens"))
            and all(is_finite_number(record[k]) or record[k] is None
                    for k in ("loss", "accuracy", "held_out_tokens") if k in record))


RESUMED_CHANGES = "resumed_changes.yaml"  # in .hydra/: [{step: 30, changed: {optimizer.lr: ['0.003', '0.001']}}]


def settled_config(run_dir: Path) -> dict[str, Any]:
    """The config a run trained with (its .hydra/config.yaml), flat: `optimizer.lr: 0.001`; {} where it has none."""
    return flatten(read_yaml(run_dir / ".hydra" / "config.yaml") or {})


def trained_settings(settled: dict[str, Any]) -> dict[str, str]:
    """What a run trained with (its flat .hydra/config.yaml, `settled`, less NOT_TRAINED), each setting once: a
    top-level alias (`lr`) is its group's key (optimizer.lr), or nothing the run read (`warmup_fraction` beside
    scheduler=constant, whose file takes none). As text to compare: 8 and 8.0 are one value."""
    def text(value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return repr(float(value)).removesuffix(".0")
        return json.dumps(value, sort_keys=True)

    return {key: text(value) for key, value in settled.items()
            if key not in NOT_TRAINED and key not in top_level_aliases()}


def trained_code(run_dir: Path) -> dict[str, str]:
    """The digests of the model's source files that the run's checkpoint was saved with, by module; {} without a
    readable checkpoint. Read without the weights (memory-mapped)."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return {}
    import torch  # here: only a comparison of several runs pays for the import

    from lmplay.runner.checkpoint import saved_digests

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return saved_digests(ckpt["components"]["model"]["state"])
    except Exception:  # noqa: BLE001 - a damaged or older checkpoint: no code to compare, as without one
        return {}


def code_settings(codes: list[dict[str, str]]) -> list[dict[str, str]]:
    """Runs' code digests as settings to compare (`code of experiments.swiglu.swiglu_block`): seeds of one
    configuration trained on different versions of an idea's code are no seeds of one model. Only the files every
    run's checkpoint names: one saved before base classes had digests names fewer, with none of them changed."""
    shared = set.intersection(*(set(code) for code in codes)) if codes else set()
    return [{f"code of {module}": code[module][:10] for module in sorted(shared)} for code in codes]


def differing_settings(settings: list[dict[str, str]]) -> dict[str, list[str]]:
    """The keys whose values differ among `settings` (of trained_settings), with their values in the order met;
    "-" where a run's config lacks the key."""
    values = {key: list(dict.fromkeys(s.get(key, "-") for s in settings)) for key in sorted({k for s in settings
                                                                                              for k in s})}
    return {key: found for key, found in values.items() if len(found) > 1}


def settings_text(differing: dict[str, list[str]]) -> str:
    """`optimizer.lr 0.003/0.001, curriculum.stages`: each key, with its values where they are short."""
    return ", ".join(key if any(len(v) > 30 for v in found) else f"{key} {'/'.join(found)}"
                     for key, found in differing.items())


def records_problem(stats: Any) -> str | None:
    """Why `stats` (stats.json's, or a checkpoint's copy) is not lmplay's records, or None: the plots, the summary
    and a resume each read them as lists of valid_record's."""
    if not isinstance(stats, dict) or not all(isinstance(stats.get(k, []), list) for k in RECORD_KINDS):
        return 'it should be {"train": [...], "validation": [...]}'
    for kind in RECORD_KINDS:
        bad = next((r for r in stats.get(kind, []) if not valid_record(r)), None)
        if bad is not None:
            return f"it has a {kind} record that is not lmplay's: {str(bad)[:100]}"
    return None


def load_run(path: Path, train: bool = True) -> Run:
    """A run's records, overrides and experiment name; a run dir without .hydra/ still loads (no overrides).
    `train=False` keeps only the last train record (the run's tokens and steps): a plot of validation curves held
    every train record of every run (5 GB for 50 runs of 200k steps)."""
    path = Path(path)
    try:
        stats = json.loads((path / STATS).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path / STATS} cannot be read: {e}") from None
    if (problem := records_problem(stats)) is not None:
        raise ConfigError(f"{path / STATS} is not lmplay's stats: {problem}")
    if not train:
        stats["train"] = stats.get("train", [])[-1:]
    overrides = [str(o) for o in read_yaml(path / ".hydra" / "overrides.yaml", list) or []]
    choices = dig(read_yaml(path / ".hydra" / "hydra.yaml"), "hydra", "runtime", "choices")
    choices = {k: v for k, v in choices.items() if isinstance(v, str)} if isinstance(choices, dict) else {}
    exp = choices.get("exp") or override_value(overrides, "exp")
    settled = settled_config(path)
    tokenizer = settled.get("tokenizer")
    changes = [c for c in read_yaml(path / ".hydra" / RESUMED_CHANGES, list) or []
               if isinstance(c, dict) and isinstance(c.get("changed"), dict)]
    size = stats.get("parameters")
    return Run(path, stats.get("train", []), stats.get("validation", []), overrides, exp,
               str(tokenizer) if tokenizer is not None else None, settled, choices, changes,
               size if isinstance(size, int) and not isinstance(size, bool) else None)


def load_runs(paths: list[Path], skipped: list[str] | None = None, train: bool = True) -> list[Run]:
    """Every run under `paths`, in the order given (and job order within a sweep); a run found twice loads once.
    A damaged run found inside a sweep is left out, its reason appended to `skipped`; one named itself is an
    error."""
    seen, runs = set(), []
    for path in paths:
        for run_dir in find_run_dirs(path):
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                runs.append(load_run(run_dir, train))
            except ConfigError as e:
                if skipped is None or Path(path).resolve() == run_dir.resolve():
                    raise
                skipped.append(str(e))
    return runs
