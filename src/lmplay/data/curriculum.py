"""Curriculum: a plan of named stages, and the position in it.

A plan (conf/curriculum/<name>.yaml) lists stages; each stage names its datasets (interleaved with
`first_exhausted` or `all_exhausted`, optionally weighted), its length (exactly one of `steps`, `tokens`
or `epochs`) and `overrides`: training keys (lr, batch_size, include_prompts, scheduler...) that the
runner applies during that stage only.

Lengths: `steps` counts next_batch() calls; `tokens` counts the tokens that count in the loss
(Batch.num_tokens), checked before each batch; `epochs` counts passes over the stage's interleaved rows
(fractions allowed) and ends with a last, possibly short, batch: within an epoch no row is repeated or
skipped, and a stage longer than an epoch simply continues into the next, reshuffled, epoch.

The position (state_dict) is a few integers: a new process that builds the same Curriculum, calls
prepare() and load_state_dict() gets exactly the batches an uninterrupted run would have got.
"""

import functools
import hashlib
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from lmplay.data.batch import Batch
from lmplay.data.batching import MODES, RowsBatcher, make_batcher
from lmplay.data.estimate import packed_steps, row_stats, rows_steps, stream_steps
from lmplay.data.interleave import DrawnStream, HeldOutStream, RowFeed, SizedStream, check_interleave
from lmplay.data.sources import (
    DatasetSpec,
    check_file_exists,
    check_fraction,
    check_validation_path,
    load_source,
    resolve_spec,
)
from lmplay.data.tokenized import PreparedDataset, SizedRows, cache_root, prepare_dataset
from lmplay.data.tokenizers import Tokenizer, get_tokenizer
from lmplay.cli import printable
from lmplay.errors import ConfigError
from lmplay.files import write_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1
STAGE_KEYS = ("name", "datasets", "interleave", "weights", "steps", "tokens", "epochs", "overrides", "batching")
LENGTH_KEYS = ("steps", "tokens", "epochs")
RESERVED_STAGE_NAMES = ("corrupted",)  # model.corrupted.lmp is a diverged run's dump


@dataclass
class Stage:
    """One stage of a plan. Exactly one of steps / tokens / epochs is set."""

    name: str
    datasets: list[DatasetSpec]
    interleave: str = "first_exhausted"
    weights: list[float] | None = None
    steps: int | None = None
    tokens: int | None = None
    epochs: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    batching: str = "rows"
    own_batching: bool = field(default=False, compare=False)  # the stage's entry gave `batching:` (which the plan's
    # does not change), whatever its value

    @property
    def length(self) -> str:
        key = next(k for k in LENGTH_KEYS if getattr(self, k) is not None)
        return f"{getattr(self, key)} {key}"


def parse_stage(entry: dict, index: int, default_batching: str) -> Stage:
    where = f"curriculum stage {entry.get('name', index)!r}" if isinstance(entry, dict) else f"curriculum stage {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a stage is a mapping with name, datasets and one of steps/tokens/epochs")
    unknown = set(entry) - set(STAGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(STAGE_KEYS)}")
    lengths = [k for k in LENGTH_KEYS if entry.get(k) is not None]
    if len(lengths) != 1:
        given = f"got {' and '.join(lengths)}" if lengths else "got none"
        drop = (f"; on the command line, {' or '.join(f'~curriculum.stages.{index}.{k}' for k in lengths)} drops one"
                if len(lengths) > 1 else "")
        raise ConfigError(f"{where}: give exactly one of steps, tokens or epochs ({given}), e.g. epochs: 1{drop}")
    value = entry[lengths[0]]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or \
            (lengths[0] != "epochs" and value != int(value)):
        raise ConfigError(f"{where}: {lengths[0]}={value!r} must be a positive "
                          f"{'number' if lengths[0] == 'epochs' else 'integer'}")
    datasets = entry.get("datasets")
    if not datasets or not isinstance(datasets, (list, tuple)):
        raise ConfigError(f"{where}: datasets must list at least one dataset, e.g. datasets: [shakespeare]")
    specs = [resolve_spec(d, where, f"curriculum.stages.{index}.datasets.{j}") for j, d in enumerate(datasets)]
    interleave = entry.get("interleave") or "first_exhausted"
    weights = entry.get("weights")
    check_interleave(interleave, weights, len(specs), where)
    batching = entry.get("batching") or default_batching
    if batching not in MODES:
        raise ConfigError(f"{where}: batching={batching!r} is unknown; use one of: {', '.join(MODES)}")
    if any(s.streaming for s in specs) and lengths[0] == "epochs":
        raise ConfigError(f"{where}: it streams a dataset, whose length is unknown; give its length in steps or tokens")
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: overrides must be a mapping of training keys, e.g. overrides: {{lr: 1.0e-4}}")
    name = str(entry.get("name") or f"stage{index}")
    if len(f"model.{name}.lmp.bak.tmp".encode()) > 255:  # the stage's checkpoint is written after it has trained
        longest = 255 - len("model..lmp.bak.tmp")
        raise ConfigError(f"{where}: name={name[:40]!r}... is {len(name.encode())} bytes long (UTF-8); its checkpoint "
                          f"file, model.<name>.lmp, must fit the filesystem's 255 bytes: give it a name of at most "
                          f"{longest} bytes")
    if re.search(r"[/\\\0]", name) or name.startswith(".") or name in RESERVED_STAGE_NAMES:  # model.<name>.lmp
        plain = re.sub(r"[/\\\0]+", "_", name).strip("._") or "one"
        plain = f"{plain}_stage" if plain in RESERVED_STAGE_NAMES else plain
        raise ConfigError(f"{where}: name={name!r} names the stage's checkpoint file (model.<name>.lmp), which must be "
                          f"a plain file name in the run dir, not a path or 'corrupted'; e.g. name: {plain}")
    if printable(name) != name or "\n" in name or "\t" in name:  # printed on every progress line
        raise ConfigError(f"{where}: name={printable(name)!r} holds control characters (an escape sequence would reach "
                          f"the terminal on every progress line); give it a name of plain text")
    return Stage(name=name, datasets=specs, interleave=interleave,
                 weights=None if weights is None else [float(w) for w in weights],
                 **{lengths[0]: (float(value) if lengths[0] == "epochs" else int(value))},
                 overrides=dict(overrides), batching=batching, own_batching=bool(entry.get("batching")))


@functools.cache
def _counting_code_digest() -> str:
    """A digest of the modules that decide how many batches a stage gives, so a kept step count is never
    read back by a version of lmplay that would count differently."""
    h = hashlib.sha256()
    for name in ("lmplay.data.rows", "lmplay.data.batching", "lmplay.data.interleave", "lmplay.data.tokenized",
                 "lmplay.data.estimate", __name__):
        h.update(Path(sys.modules[name].__file__).read_bytes())
    return h.hexdigest()


class Curriculum:
    """The plan and the position in it; see the module docstring. Built by Hydra from conf/curriculum/*.yaml.

    Args:
        stages: the plan, a list of stage mappings (see Stage and parse_stage).
        batching: "rows" (the default, the original lmplay's) or "packed"; a stage may override it.
        validation_fraction: rows held out per dataset (unless the dataset has its own validation split).
        validation_seed: draws the held-out rows; fixed and separate from the training seed, so runs with
            different seeds are validated on the same rows.
        cache_dir: where tokenized data is cached (default $LMPLAY_CACHE or ~/.cache/lmplay).
        path: the plan's input file, for plans whose stages interpolate it (text_file, two_stage).
        stream_validation_rows: rows held out from the head of a streamed dataset (its size is unknown).
        shuffle_buffer: rows in the shuffle buffer of a streamed dataset.
        tokenize_procs: processes for tokenizing (default: 1, or up to 8 for datasets over 200k rows).
    """

    def __init__(self, stages: list[dict], batching: str = "rows", validation_fraction: float = 0.01,
                 validation_seed: int = 0, cache_dir: str | None = None, path: str | None = None,
                 stream_validation_rows: int = 1000, shuffle_buffer: int = 10_000,
                 tokenize_procs: int | None = None) -> None:
        if isinstance(stages, (DictConfig, ListConfig)):  # instantiated without _convert_="all"
            stages = OmegaConf.to_container(stages, resolve=True)
        if batching not in MODES:
            raise ConfigError(f"curriculum.batching={batching!r} is unknown; use one of: {', '.join(MODES)}")
        for key, value in (("cache_dir", cache_dir), ("path", path)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"curriculum.{key}={value!r} should be a path")
        check_fraction(validation_fraction, "curriculum.validation_fraction")
        counts = {"tokenize_procs": (1 if tokenize_procs is None else tokenize_procs, 1),
                  "stream_validation_rows": (stream_validation_rows, 0), "shuffle_buffer": (shuffle_buffer, 1),
                  "validation_seed": (validation_seed, 0)}
        for key, (value, least) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"curriculum.{key}={value!r} should be an integer >= {least}")
        if stages == "???":  # OmegaConf's unset value: conf/curriculum_base.yaml's, for a plan of one's own
            raise ConfigError("curriculum.stages is not set: the plan lists no stages (conf/curriculum_base.yaml, "
                              "which every plan starts from, has none); list them under stages:")
        if not stages:
            raise ConfigError("the curriculum has no stages; list at least one under stages:")
        self.stages = [parse_stage(s, i, batching) for i, s in enumerate(stages)]
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"curriculum stage names must differ (they name model.<stage>.lmp): {names}")
        self.batching = batching
        self.validation_fraction, self.validation_seed = validation_fraction, validation_seed
        self.cache_dir, self.tokenize_procs = cache_dir, tokenize_procs
        self.stream_validation_rows, self.shuffle_buffer = stream_validation_rows, shuffle_buffer
        self.trained_share: float | None = None  # by estimate_stage_steps: the share of the stage's rows' tokens
        # that rows batching trains (a long row's samples past its batch are dropped); None: all, or not counted
        self.stage_index = 0
        self.finished = False  # the whole plan trained: a resume with the same plan has nothing to do
        self._data: list[list[PreparedDataset]] = []
        self._validation: dict[tuple, list[Batch]] = {}
        self._held_out_beyond: dict[tuple, bool] = {}
        self._row_stats: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def check_files(self) -> None:
        """Every local file the plan names is there (without reading one): a sweep checks it before its jobs."""
        for stage in self.stages:
            for spec in stage.datasets:
                if spec.path:
                    check_file_exists(spec.path, f"curriculum stage {stage.name!r}")
                if spec.validation_path:
                    check_validation_path(spec, f"curriculum stage {stage.name!r}")

    # -- setup ----------------------------------------------------------------------------------------------
    def prepare(self, tokenizer: Tokenizer | str, context_len: int, seed: int, position: dict | None = None) -> None:
        """Load and tokenize (or read from the cache) every stage's datasets, so that any mistake in the
        plan shows up now rather than stages later; then start at the first stage, or at a saved `position`
        (a state_dict) when resuming."""
        self.tokenizer = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        if context_len < 2:
            raise ConfigError(f"context_len={context_len} is too small for training; use at least 2")
        self.context_len, self.seed = int(context_len), int(seed)
        self._cache = cache = cache_root(self.cache_dir)
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"the tokenized-data cache {cache} cannot be made ({e.strerror or e}); set "
                              f"curriculum.cache_dir=DIR (or LMPLAY_CACHE=DIR) to a directory you can write") from None
        prepared: dict[str, PreparedDataset] = {}
        self._data, self._validation, self._held_out_beyond, self._row_stats = [], {}, {}, {}
        for i, stage in enumerate(self.stages):
            for j, spec in enumerate(stage.datasets):
                if repr(spec) not in prepared:
                    where = f"curriculum stage {stage.name!r}"
                    try:
                        prepared[repr(spec)] = prepare_dataset(
                            load_source(spec, where, f"curriculum.stages.{i}.datasets.{j}"), self.tokenizer, cache,
                            self.validation_fraction,
                            self.validation_seed, self.stream_validation_rows, self.shuffle_buffer,
                            self.tokenize_procs, where)
                    except ConfigError as e:  # one raised inside reading or tokenizing rows names no stage
                        if str(e).startswith(where):
                            raise
                        raise ConfigError(f"{where}: {spec.label}: {e}") from None
            self._data.append([prepared[repr(spec)] for spec in stage.datasets])
        for i in range(len(self.stages)):  # now, not once the stages before it have trained for hours
            self._check_packed_window(i)
        if position is None:
            self._enter_stage(0)
        else:
            self.load_state_dict(position)

    def _check_packed_window(self, index: int) -> None:
        """A packed stage of `epochs` on sized data whose rows, all its epochs' worth, cannot fill one window of
        context_len+1 tokens gives no batch: said as the run starts (the runner said it when the stage began)."""
        stage, sources = self.stages[index], [d.train for d in self._data[index]]
        if stage.batching != "packed" or stage.epochs is None or not all(isinstance(s, SizedRows) for s in sources):
            return
        stream = SizedStream(sources, stage.interleave, stage.weights, self.seed, index,
                             f"curriculum stage {stage.name!r}")
        budget = max(1, round(stage.epochs * stream.epoch_len))
        longest = max(int((s.table.prompt_lens[s.index] + s.table.text_lens[s.index]).max(initial=0)) for s in sources)
        if budget * (longest + 1) < self.context_len + 1:  # each row is read with its EOS
            rows = f"curriculum.stages.{index}.batching=rows" if stage.own_batching else "curriculum.batching=rows"
            raise ConfigError(f"curriculum stage {stage.name!r} gives no training batch: with packed batching its "
                              f"{stage.length} ({budget} rows of at most {longest + 1} tokens) is shorter than one "
                              f"window of context_len+1 = {self.context_len + 1} tokens; use more data or epochs, "
                              f"a smaller context_len, or {rows}")

    def _enter_stage(self, index: int) -> None:
        stage, data = self.stages[index], self._data[index]
        sources = [d.train for d in data]
        if all(isinstance(s, SizedRows) for s in sources):
            stream = SizedStream(sources, stage.interleave, stage.weights, self.seed, index,
                                 f"curriculum stage {stage.name!r}")
        else:
            stream = DrawnStream(sources, stage.interleave, stage.weights, self.seed, index)
        budget = None
        if stage.epochs is not None:
            budget = max(1, round(stage.epochs * stream.epoch_len))
        self.stage_index, self.finished = index, False
        self._feed = RowFeed(stream, budget)
        self._batcher = make_batcher(stage.batching, self.context_len, self.tokenizer.eot_id)
        self._steps = self._tokens = 0
        sizes = ", ".join(f"{d.label} ({len(d.train)} rows, {len(d.validation)} held out)"
                          if isinstance(d.train, SizedRows) else f"{d.label} (streamed, {len(d.validation)} held out)"
                          for d in data)
        total = sum(len(s) for s in sources) if isinstance(stream, SizedStream) else None
        if stage.epochs is not None and total is not None and stream.epoch_len < total:  # a small dataset ends it
            sizes += f"; an epoch is {stream.epoch_len} of their {total} rows ({stage.interleave})"
        log.info("stage %r: %s; %s, %s batching", stage.name, sizes, stage.length, stage.batching)

    # -- training -------------------------------------------------------------------------------------------
    def next_batch(self, batch_size: int, include_prompts: bool) -> Batch | None:
        """The next batch of the current stage, or None when the stage's length is reached."""
        stage = self.stages[self.stage_index]
        if (stage.steps is not None and self._steps >= stage.steps) or \
                (stage.tokens is not None and self._tokens >= stage.tokens):
            return None
        batch = self._batcher.next_batch(self._feed, batch_size, include_prompts)
        if batch is not None:
            self._steps += 1
            self._tokens += batch.num_tokens
        return batch

    def advance_stage(self) -> bool:
        """Move on from a stage that ended to the next one; False when it was the last: the plan is finished."""
        if self.stage_index + 1 >= len(self.stages):
            self.finished = True
            return False
        self._enter_stage(self.stage_index + 1)
        return True

    # -- validation -----------------------------------------------------------------------------------------
    def held_out_rows(self) -> int:
        """Rows the current stage holds out for validation."""
        return sum(len(d.validation) for d in self._data[self.stage_index])

    def validation_batches(self, num_batches: int, batch_size: int, include_prompts: bool = True) -> list[Batch]:
        """The first `num_batches` batches of the current stage's held-out rows (fewer if they run out),
        batched like training; the same batches on every call."""
        key = (self.stage_index, num_batches, batch_size, include_prompts)
        if key not in self._validation:
            stage = self.stages[self.stage_index]
            held = [(d.validation, w) for d, w in zip(self._data[self.stage_index],
                                                      stage.weights or [1.0] * len(stage.datasets))
                    if len(d.validation)]
            batches: list[Batch] = []
            if held:
                weights = [w for _, w in held] if stage.weights else None
                stream = HeldOutStream([v for v, _ in held], weights, self.validation_seed, self.stage_index)
                feed = RowFeed(stream, stream.epoch_len)
                batcher = make_batcher(stage.batching, self.context_len, self.tokenizer.eot_id)
                while len(batches) < num_batches and (batch := batcher.next_batch(feed, batch_size,
                                                                                  include_prompts)) is not None:
                    batches.append(batch)
                self._held_out_beyond[key] = batcher.next_batch(feed, 1, include_prompts) is not None
            self._validation[key] = batches
        return self._validation[key]

    def held_out_beyond(self, num_batches: int, batch_size: int, include_prompts: bool = True) -> bool:
        """Whether the held-out rows make more than those `validation_batches` batches: a validation loss measured on
        part of them (a long row's first windows) reads firmer than it is unless said."""
        self.validation_batches(num_batches, batch_size, include_prompts)
        return self._held_out_beyond.get((self.stage_index, num_batches, batch_size, include_prompts), False)

    # -- length estimates -----------------------------------------------------------------------------------
    def estimate_stage_steps(self, batch_size: int, include_prompts: bool = True) -> int:
        """Optimizer steps in the whole current stage: exact for `steps`, and for `epochs` and `tokens` on
        datasets of known size (with the same include_prompts as training); an estimate for streams.

        Counting a sized stage replays its batching on row sizes (seconds on a big stage), so the count is
        kept in the cache dir under a key of everything it depends on, and a resumed or repeated run reads it."""
        stage = self.stages[self.stage_index]
        self.trained_share = None
        stream = self._feed.stream
        rows = isinstance(self._batcher, RowsBatcher) and isinstance(stream, SizedStream)
        if stage.steps is not None and not rows:  # a rows stage of steps still counts the share of tokens it trains
            return stage.steps
        stats = functools.partial(self._stats, include_prompts=include_prompts)
        if not isinstance(stream, SizedStream):
            held = [d.validation for d in self._data[self.stage_index] if len(d.validation)]
            return stream_steps(held, stats, stage.batching, batch_size, self.context_len, include_prompts,
                                stage.tokens)
        path = None
        try:
            path = self._cache / "estimates" / f"{self._estimate_key(batch_size, include_prompts)}.json"
            kept = json.loads(path.read_text())
            self.trained_share = None if kept["share"] is None else float(kept["share"])
            return int(kept["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        length = {"budget": self._feed.budget, "tokens": stage.tokens}
        if rows:
            steps, self.trained_share = rows_steps(stream, stats, batch_size, self.context_len, include_prompts,
                                                   **length, max_steps=stage.steps)
        else:
            steps = packed_steps(stream, batch_size, self.context_len, include_prompts, **length)
        if path is None:  # the code digest could not be read: no kept counts
            return steps
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"steps": steps, "share": self.trained_share}))
        except OSError as e:  # a read-only cache: count again next time
            log.debug("could not keep the step count in %s: %s", path, e)
        return steps

    @property
    def skipped_windows(self) -> int:
        """Packed windows of the current stage with no target (inside one prompt, without prompts in the loss),
        skipped in this process."""
        return self._batcher.skipped

    def stage_fraction_done(self) -> float:
        """How much of the current stage's length is behind the position: its steps, tokens or rows (epochs)."""
        stage = self.stages[self.stage_index]
        if stage.steps is not None:
            return min(self._steps / stage.steps, 1.0)
        if stage.tokens is not None:
            return min(self._tokens / stage.tokens, 1.0)
        return min(self._feed.rows / self._feed.budget, 1.0)

    def _estimate_key(self, batch_size: int, include_prompts: bool) -> str:
        """Everything a sized stage's step count depends on: its data, order and batching (data_key), the
        stage's place and length, the batch, and the code that frames, orders and batches rows."""
        stage = self.stages[self.stage_index]
        blob = json.dumps([self.data_key(), self.stage_index, stage.steps, stage.tokens, stage.epochs,
                           int(batch_size), bool(include_prompts), _counting_code_digest()])
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _stats(self, src: SizedRows, include_prompts: bool) -> tuple[np.ndarray, np.ndarray]:
        """estimate.row_stats, computed once per table."""
        key = (id(src.table), include_prompts)
        if key not in self._row_stats:
            self._row_stats[key] = row_stats(src, self.context_len, include_prompts)
        return self._row_stats[key]

    # -- position -------------------------------------------------------------------------------------------
    def data_key(self, same_rows: bool = False) -> str:
        """What the position refers to: the stage's data, tokenizer, context, seed and batching (`same_rows`: as
        an earlier lmplay that cut the same rows keyed it)."""
        stage = self.stages[self.stage_index]
        parts = [d.same_rows_key if same_rows else d.key for d in self._data[self.stage_index]]
        parts += [str(self.context_len), str(self.seed), stage.batching, stage.interleave, str(stage.weights)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _plan_key(self) -> str:
        """What a finished plan was: its stages' names, data and lengths. A resume that lengthens a stage or adds
        one has more to train; one that changes only settings (an lr) has not."""
        parts = [f"{s.name}|{[repr(d) for d in s.datasets]}|{s.length}|{s.interleave}|{s.weights}|{s.batching}"
                 for s in self.stages]
        return hashlib.sha256("||".join(parts).encode()).hexdigest()[:16]

    def _trained_key(self, index: int) -> str:
        """What the stages before stage `index` were: their names and lengths, all trained by the time it starts. A
        stage's rows are drawn in an order seeded by its index too: one dropped or added before it also changed
        the data of the stage the run goes on with."""
        parts = [f"{s.name}|{s.length}" for s in self.stages[:index]]
        return hashlib.sha256("||".join(parts).encode()).hexdigest()[:16]

    def state_dict(self) -> dict:
        """The position: plain ints, strings, lists and dicts only."""
        return {"version": STATE_VERSION, "stage": self.stage_index, "stage_name": self.stages[self.stage_index].name,
                "trained_before": self._trained_key(self.stage_index),
                "steps": self._steps, "tokens": self._tokens, "feed": self._feed.state_dict(),
                "batcher": self._batcher.state_dict(), "data": self.data_key(),
                "finished_plan": self._plan_key() if self.finished else None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position (after prepare())."""
        names = [s.name for s in self.stages]
        if state.get("version") != STATE_VERSION or state.get("stage_name") not in names:
            raise ConfigError(f"the checkpoint's data position (stage {state.get('stage_name')!r}) does not fit this "
                              f"curriculum (stages: {', '.join(names)}); resume with the run's curriculum, train this one "
                              f"in a run dir of its own (run_name=...), or start over with fresh=true")
        index = names.index(state["stage_name"])
        if state.get("trained_before", self._trained_key(index)) != self._trained_key(index):
            raise ConfigError(f"this curriculum's stages before {state['stage_name']!r}, where the run is, are not "
                              f"the ones it trained (one lengthened, shortened, added or dropped): the run goes on "
                              f"from {state['stage_name']!r}, and would be labelled with a plan it did not train; "
                              f"resume with its plan's stages before it (its .hydra/overrides.yaml), or train the new "
                              f"plan in a run of its own (run_name=...) or with fresh=true")
        self._enter_stage(index)
        if state["data"] not in (self.data_key(), self.data_key(same_rows=True)):
            log.warning("stage %r: the data (its rows, or the stage's weights or interleave), tokenizer, context_len, "
                        "seed or batching differ from the checkpoint's (or "
                        "how this lmplay cuts rows: an upgrade can re-cut them); continuing from the same row count, "
                        "but the batches are not the ones the run would have got, and where the rows changed so did "
                        "the held-out ones: validation may now measure rows the run trained on (fresh=true starts it "
                        "over on this data)", state["stage_name"])
        self._steps, self._tokens = int(state["steps"]), int(state["tokens"])
        self._feed.load_state_dict(state["feed"])
        self._batcher.load_state_dict(state["batcher"], self._feed)
        self.finished = state.get("finished_plan") == self._plan_key()

    def __repr__(self) -> str:
        plan = " -> ".join(f"{s.name} [{', '.join(d.label for d in s.datasets)}; {s.length}]" for s in self.stages)
        return f"Curriculum({plan}; {self.batching} batching)"
