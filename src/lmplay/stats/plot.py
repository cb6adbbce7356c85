"""Comparison plots and tables: loss and accuracy against tokens seen, one line per configuration, baseline first.

Runs are compared at equal tokens, never at equal steps: a run with a bigger batch sees more data
per step. Runs that differ only in their seed (see `stats.runs.REPEAT_KEYS`) are repeats of one
configuration, drawn as their mean with a band from the lowest to the highest seed, so that a gap
between two ideas can be read against the spread that chance alone produces.
"""

import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from lmplay.config import override_key, override_value
from lmplay.errors import ConfigError, OutputError
from lmplay.files import write_atomic
from lmplay.stats.runs import (
    HELD_OUT_CAUSE,
    HOW_IT_RAN,
    NOT_SETTINGS,
    NOT_TRAINED,
    SIZE_CAUSE,
    Run,
    code_settings,
    differing_settings,
    settings_text,
    sizes_differ,
    trained_code,
    trained_settings,
)

METRICS = {"loss": "loss (nats per token)", "accuracy": "next-token accuracy (top-1)"}
COMPONENTS = ("optimizer", "runner", "scheduler")  # where a top-level alias (lr, batch_size) takes effect
BETTER = {"loss": "lower is better", "accuracy": "higher is better"}


@dataclass
class Group:
    """The runs of one configuration (its seeds)."""

    label: str
    runs: list[Run]


@dataclass
class Curve:
    """A configuration's metric: each seed's `seed_values[seed, point]` at its own `seed_tokens[seed, point]`.

    Seeds validate at the same sample counts, but a sample holds a different number of tokens in each
    seed's data order (rows batching), so each seed is read on its own token axis.
    """

    label: str
    seed_tokens: np.ndarray
    seed_values: np.ndarray
    seeds: tuple[str | None, ...] = ()
    stages: tuple[str, ...] = ()  # each point's curriculum stage

    def segments(self) -> list[tuple[str, "Curve"]]:
        """The curve a stage at a time. Each stage trains and validates on its own data: a line across a stage's
        switch drew the change of held-out rows as the model's."""
        stages = self.stages or ("",) * self.seed_tokens.shape[1]
        return [(stages[part.start], Curve(self.label, self.seed_tokens[:, part], self.seed_values[:, part],
                                           self.seeds)) for part in stage_parts(stages)]

    @property
    def num_seeds(self) -> int:
        return len(self.seed_values)

    @cached_property
    def cadences(self) -> list[float]:
        """Each seed's median distance between its points past 0 (0 where it validated only at 0 and its end)."""
        past_0 = [seed[seed > 0] for seed in self.seed_tokens]
        return [float(np.median(np.diff(p))) if len(p) >= 3 else 0.0 for p in past_0]

    @property
    def span(self) -> tuple[float, float]:
        """The tokens every seed has reached: no value of the curve is an extrapolation."""
        return float(self.seed_tokens[:, 0].max()), float(self.seed_tokens[:, -1].min())

    @property
    def tokens(self) -> np.ndarray:
        """The points drawn: the seeds' mean token counts, kept within the span."""
        return np.unique(np.clip(self.seed_tokens.mean(0), *self.span))

    @property
    def values(self) -> np.ndarray:
        """values[seed, point] at `tokens`."""
        return self.at(self.tokens)

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(0)

    def at(self, tokens: float | np.ndarray) -> np.ndarray:
        """Each seed's value at `tokens`, linear between its own points."""
        return np.array([np.interp(tokens, t, v) for t, v in zip(self.seed_tokens, self.seed_values)])

    def measured(self, tokens: float) -> np.ndarray:
        """Each seed's value at `tokens` for a table: its own validation point where one is within SAME of `tokens`
        (seeds of rows batching validate a few % apart), else `at`'s line. The line alone moved a seed's value
        toward an earlier, higher point: a table's mean differed from the sweep summary's for the same runs."""
        values = []
        for t, v in zip(self.seed_tokens, self.seed_values):
            nearest = np.abs(t - tokens).argmin()
            values.append(v[nearest] if abs(t[nearest] - tokens) <= SAME * tokens else np.interp(tokens, t, v))
        return np.array(values)

    def minus(self, base: "Curve", tokens: np.ndarray, read: str = "at") -> np.ndarray:
        """Each seed's difference from the baseline at `tokens` (`read`: "at" or "measured"), paired by seed on the
        seeds both ran (the same data order, so the difference is the idea's, not the order's), else from the
        baseline's mean."""
        mine, theirs = getattr(self, read)(tokens), getattr(base, read)(tokens)
        if pairs := self.pairs_with(base):
            return mine[[self.seeds.index(s) for s in pairs]] - theirs[[base.seeds.index(s) for s in pairs]]
        return mine - theirs.mean(0)

    def pairs_with(self, base: "Curve") -> list[str]:
        """The seeds both curves ran: seed by seed, the data order is the same, and the difference is the idea's."""
        return [s for s in self.seeds if s is not None and s in base.seeds]

    def fewer_pairs(self, base: "Curve") -> str:
        """"2 pairs" where a difference from `base` is paired on fewer seeds than this curve ran, else ""."""
        pairs = len(self.pairs_with(base))
        return f"{pairs} pair{'s' * (pairs > 1)}" if 0 < pairs < self.num_seeds else ""

    def spread_minus(self, base: "Curve", tokens: float) -> float | None:
        """The std of one seed's difference from the baseline at `tokens`: of the paired differences, else of two
        independent seeds' (their variances add); None where there is one pair, or a side has one seed."""
        if pairs := self.pairs_with(base):
            return float(self.minus(base, np.array(tokens), "measured").std(ddof=1)) if len(pairs) > 1 else None
        if self.num_seeds < 2 or base.num_seeds < 2:
            return None
        return float(np.hypot(self.measured(tokens).std(ddof=1), base.measured(tokens).std(ddof=1)))


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs of one configuration with different seeds form a group, in the order the runs first appear.

    A run without .hydra/overrides.yaml is its own group (nothing says it repeats another), and so is a
    run whose seed a group already holds: the same command run twice (e.g. before and after a code change,
    in two sweeps or under two run_names) is a comparison, not a repeat. A sweep's seeds stay together: they
    join another dir's runs only where no seed is in both (seeds 0,1 of a sweep, then 2,3 of another).
    """
    keys = typed_settings(runs)

    def config(run: Run) -> tuple:
        return trained_config(run, keys) if run.overrides else ("path", str(run.path))

    def new_seeds(group: list[Run], more: list[Run]) -> bool:
        return not {r.trained_seed for r in group} & {r.trained_seed for r in more}

    def pool(parts: list[list[Run]], key: Callable[[Run], tuple]) -> list[list[Run]]:
        """Each part joins the first pool of its key that holds none of its seeds, else starts one."""
        pools: list[list[Run]] = []
        by_key: dict[tuple, list[list[Run]]] = {}
        for part in parts:
            same = by_key.setdefault(key(part[0]), [])
            joined = next((p for p in same if new_seeds(p, part)), None)
            if joined is None:
                joined = []
                same.append(joined)
                pools.append(joined)
            joined.extend(part)
        return pools

    batches = pool([[run] for run in runs], lambda run: (config(run), run.path.parent))  # a sweep's seeds
    groups = pool(batches, config)  # then across dirs
    out = [Group("", members) for members in groups]
    for group, label in zip(out, labels(out)):
        group.label = label
    return out


def typed_settings(runs: list[Run]) -> set[str]:
    """The keys any of `runs` typed that set what is trained (not runner.mini_batch_size or save_interval, which
    change how it ran), each once: `lr` and `optimizer.lr` are one key."""
    ignored = set(NOT_TRAINED) - {"exp", "max_steps"}  # what a run is and how long it went split configurations
    keys = set()
    for run in runs:
        for typed in run.config:
            full = effective_key(run, override_key(typed))
            component, _, alias = full.partition(".")
            if full not in ignored:
                keys.add(alias if component in COMPONENTS and alias else full)
    return keys


def trained_config(run: Run, keys: set[str]) -> tuple:
    """The values a run trained with at `keys` (its .hydra/config.yaml): `lr=1e-3`, `lr=0.001`,
    `optimizer.lr=0.001`, and lr left at a default of 0.001, are one configuration, whose seeds average together.
    A group's choice (`optimizer=adamw`, typed or the default) is its file's name (.hydra/hydra.yaml); where the
    config lacks the key (a run without .hydra/) the typed value stands for it (None: not typed)."""
    settings = set()
    for key in keys:
        full = effective_key(run, key)
        spellings = (full, key, *(f"{c}.{key}" for c in COMPONENTS))  # optimizer.lr=... typed for `lr`
        typed = next((v for k in spellings if (v := override_value(run.overrides, k)) is not None), None)
        if full in run.settled:
            value = run.settled[full]
        elif key in run.choices:  # a group's file: optimizer=adamw typed, or adamw by default
            value = run.choices[key]
        else:
            value = None if typed is None else typed_value(typed)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)  # grad_clip=1 is 1.0
        settings.add((key, repr(value)))
    return tuple(sorted(settings))


def typed_value(text: str) -> Any:
    """A typed override's value as Hydra reads a number: 1e-3 is 0.001."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def labels(groups: list[Group]) -> list[str]:
    """The experiment plus the overrides that differ between groups; what all share says nothing about a line."""
    configs = [set(g.runs[0].config) for g in groups]
    shared = set.intersection(*configs) if configs else set()
    out = []
    for group, config in zip(groups, configs):
        run = group.runs[0]
        if not run.overrides:
            out.append(run.path.name)
            continue
        extra = [o for o in sorted(config - shared) if override_key(o) != "exp"]
        out.append(" ".join([run.exp or run.path.name, *extra]))
    ambiguous = {label for label in out if out.count(label) > 1}  # e.g. the same command in two sweeps
    first = [f"{g.runs[0].path.parent.name}/{g.runs[0].path.name}" for g in groups]
    # lines of several seeds, each of its own sweep, are named by their sweeps: one job's dir (`sweep/exp=a,seed=1`)
    # reads as that seed alone; where sweeps do not tell them apart (runs side by side in outputs/), first run's dirs
    swept = [sweep_of(g) for g in groups]
    by_sweep = set()
    for label in ambiguous:
        alike = [swept[i] for i, o in enumerate(out) if o == label]
        if None not in alike and len(set(alike)) == len(alike):
            by_sweep.add(label)
    return [f"{label} ({swept[i] if label in by_sweep else first[i]})" if label in ambiguous else label
            for i, label in enumerate(out)]


def sweep_of(group: Group) -> str | None:
    """The dir that holds all the group's runs, as `parent/name`, where it holds more than one of them."""
    parents = {run.path.parent for run in group.runs}
    if len(group.runs) < 2 or len(parents) != 1:
        return None
    parent = group.runs[0].path.parent
    return f"{parent.parent.name}/{parent.name}"


def pick_baseline(groups: list[Group], pattern: str | None) -> list[Group]:
    """The groups with the baseline first: the one labelled `pattern` or holding the run dir it names, else those
    whose label or run dir name contains it, where they are one experiment's (baselines() pairs its settings with
    each idea's); else the first group. Not any part of a path: a sweep dir named after the idea matched every run."""
    if pattern is None:
        return groups
    named = Path(pattern).expanduser().resolve()
    matches = [g for g in groups if g.label == pattern or any(r.path.resolve() == named for r in g.runs)] or [
        g for g in groups if pattern in g.label or any(pattern in r.path.name for r in g.runs)]
    if not matches:
        raise ConfigError(f"--baseline {pattern!r} matches none of: {', '.join(g.label for g in groups)}")
    if len({g.runs[0].exp for g in matches}) > 1:
        raise ConfigError(f"--baseline {pattern!r} matches runs of more than one experiment: "
                          f"{', '.join(g.label for g in matches)}; give one of these labels")
    return [matches[0], *[g for g in groups if g is not matches[0]]]


def setting_keys(group: Group, ignored: tuple[str, ...] = ("exp",)) -> set[str]:
    """The keys a configuration typed, as the component that reads them names them (lr -> optimizer.lr)."""
    return {effective_key(group.runs[0], override_key(o)) for o in group.runs[0].config
            if override_key(o) not in ignored}


def effective_key(run: Run, key: str) -> str:
    """`lr` is read as optimizer.lr: typed either way, one setting."""
    if "." not in key:
        return next((f"{c}.{key}" for c in COMPONENTS if f"{c}.{key}" in run.settled), key)
    return key


def setting(group: Group, key: str) -> Any:
    """The value a configuration trained with at `key`: from its .hydra/config.yaml (lr=3e-3 typed and 0.003 by
    default are one setting; a group's choice is its whole section), else as typed; numbers as numbers."""
    run = group.runs[0]
    value = run.settled.get(key)
    if value is None and any(k.startswith(key + ".") for k in run.settled):
        return {k: v for k, v in run.settled.items() if k.startswith(key + ".")}
    value = override_value(run.overrides, key) if value is None else value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def same_settings(a: Group, b: Group, ignored: tuple[str, ...] = ("exp",)) -> bool:
    return all(setting(a, key) == setting(b, key) for key in setting_keys(a, ignored) | setting_keys(b, ignored))


def baselines(groups: list[Group]) -> list[int]:
    """For each group, the index of the group it is compared with. An idea swept against the baseline at
    several settings (`exp=base,idea lr=1e-3,3e-3`) is compared with the baseline at its own settings, or else
    at them but for its length and recording cadence (one job trained on to more steps); what has no such
    match, and the baseline experiment's own groups, with the first group. Where ideas are matched with the first
    group and with others (a grid of ideas x settings), a baseline group an idea is compared with is compared with
    nothing (its own index): the baseline at lr=3e-3 minus the baseline at lr=1e-3 drew a line that dwarfed every
    idea's difference. Without ideas at the first group's settings, each baseline group keeps its comparison with
    the first: an unrelated run plotted beside `a b` (an lr comparison) took b's away."""
    base_exp = groups[0].runs[0].exp if groups else None
    bases = [j for j, h in enumerate(groups) if h.runs[0].exp == base_exp]
    matched = [0 if g.runs[0].exp == base_exp else
               next((j for j in bases if same_settings(groups[j], g, HOW_IT_RAN)),
                    next((j for j in bases if same_settings(groups[j], g, NOT_SETTINGS)), 0))
               for g in groups]
    chosen = {m for g, m in zip(groups, matched) if g.runs[0].exp != base_exp}
    if 0 not in chosen:
        return matched
    return [j if j in chosen else m for j, m in enumerate(matched)]


def unmatched(group: Group, groups: list[Group], base: int) -> bool:
    """Whether an idea is compared with the first group only because the baseline, run at several settings, has
    none at the idea's: the table says so rather than pass the first for the idea's own."""
    base_exp = groups[0].runs[0].exp
    swept = sum(g.runs[0].exp == base_exp for g in groups) > 1
    return swept and base == 0 and group.runs[0].exp != base_exp and not same_settings(group, groups[0], NOT_SETTINGS)


def ema(values: np.ndarray, weight: float, spans: np.ndarray | None = None) -> np.ndarray:
    """TensorBoard's smoothing, an exponential moving average debiased so the start is not pulled to 0, with each
    point weighted by what it spans: a point `spans[i]` units after the one before decays the average by
    weight**spans[i]. Per point alone, a run that logged every 4 steps was smoothed over 4x the tokens of the same
    run logged every step, lagged 4x as far behind its loss, and drew above it."""
    if weight <= 0 or len(values) < 2:
        return values
    out, last, norm = np.empty_like(values), 0.0, 0.0
    for i, (v, span) in enumerate(zip(values, np.ones(len(values)) if spans is None else spans)):
        decay = weight ** max(span, 1e-9)  # a validation at 0 tokens spans none: its value alone, then
        last, norm = last * decay + (1 - decay) * v, norm * decay + (1 - decay)
        out[i] = last / norm
    return out


def smoothing_unit(groups: list[Group], kind: str) -> float:
    """The tokens between two points of the most often logged run (its median): one unit of smoothing, so that
    every run of a plot is smoothed over the same tokens."""
    gaps = [float(np.median(np.diff(ends))) for g in groups for run in g.runs
            if len(ends := [float(r["tokens"]) for r in getattr(run, kind)]) > 1]
    return min((gap for gap in gaps if gap > 0), default=1.0)


def placed(records: list[dict[str, Any]], kind: str) -> list[float]:
    """Where each record is drawn, in tokens: a validation where it was taken; a train record, the mean over the
    steps since the record before it (runner.log_interval of them), at the middle of those steps' tokens. At
    their end, a run logged every 4 steps drew each mean a window late and looked worse than the same run
    logged every step."""
    ends = [float(r["tokens"]) for r in records]
    if kind != "train":
        return ends
    return [(start + end) / 2 for start, end in zip([0.0, *ends[:-1]], ends)]


def curve(group: Group, kind: str, metric: str, smooth: float = 0.0, unit: float = 1.0) -> Curve | None:
    """The group's line. Seeds of one configuration validate at the same sample counts, so their records
    line up by `samples`; the curve keeps the sample counts that every seed has reached. A seed with under half
    the points of the group's furthest one (still training, or stopped early) is left out, rather than cutting
    every seed's curve back to its few points."""
    per_run, seeds = [], []
    for run in group.runs:
        records = [r for r in getattr(run, kind) if r.get(metric) is not None]
        if records:
            spans = np.diff([float(r["tokens"]) for r in records], prepend=0.0) / unit
            at, places, values = np.array(placed(records, kind)), [], []
            measured = np.array([r[metric] for r in records], dtype=float)
            for part in stage_parts([r.get("stage", "") for r in records]):  # smoothed within a stage: its switch
                # of data is no trend. Each smoothed value at the mean place of the records it averages, with their
                # weights: curves of the same loss coincide however often their runs logged (no lag behind them)
                places += list(ema(at[part], smooth, spans[part]))
                values += list(ema(measured[part], smooth, spans[part]))
            # keyed by stage too: a later stage validates at its start, where the stage before it closed
            per_run.append({(r["samples"], r.get("stage", "")): (x, v) for r, x, v in zip(records, places, values)})
            seeds.append(run.trained_seed)
    furthest = max(map(len, per_run), default=0)
    kept = [i for i, p in enumerate(per_run) if 2 * len(p) >= furthest]
    per_run, seeds = [per_run[i] for i in kept], [seeds[i] for i in kept]
    common = [key for key in per_run[0] if all(key in p for p in per_run[1:])] if per_run else []
    if not common:
        return None
    tokens = np.array([[p[k][0] for k in common] for p in per_run], dtype=float)
    values = np.array([[p[k][1] for k in common] for p in per_run], dtype=float)
    return Curve(group.label, tokens, values, tuple(seeds), tuple(stage for _, stage in common))


def stage_parts(stages: Sequence[str]) -> list[slice]:
    """Where each stage's consecutive points lie."""
    ends = [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    return [slice(start, end) for start, end in zip([0, *ends], [*ends, len(stages)])]


def draw(curves: list[Curve], title: str, ylabel: str, path: Path, logx: bool, baseline_first: bool,
         bases: list[Curve] | None = None, blown: frozenset[int] = frozenset(), caveat: str = "") -> Path:
    """One PNG: a line per curve (a band when it averages seeds); with `bases`, each curve minus its baseline's.
    The curves at the indices `blown` leave the axis, which the others' values set. `caveat`: written on the axes,
    as a PNG goes where comparison.txt's notes do not."""
    many = len(curves) > LEGEND_INSIDE  # the legend goes beside the axes, which it would cover
    fig = Figure(figsize=(13 if many else 9, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = iter(itertools.product(["-", "--", ":", "-."], ["tab:blue", "tab:orange", "tab:green", "tab:red",
                                                               "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                                                               "tab:cyan", "tab:gray"]))
    kept: list[np.ndarray] = []  # the values of the lines that set the axis
    for i, c in enumerate(curves):
        is_baseline = i == 0 and baseline_first
        (style, color), width = (("-", "black"), 2.2) if is_baseline else (next(styles, ("-", "tab:gray")), 1.5)
        label = c.label + (" (baseline)" if is_baseline else "")
        seeds = f", mean of {c.num_seeds} seeds" if c.num_seeds > 1 else ""
        if bases:
            baseline = bases[i]
            if baseline is c and i > 0:  # the baseline at an idea's settings: the idea's line is drawn against it
                continue
            seeds = f", {pairs}" if (pairs := c.fewer_pairs(baseline)) else seeds  # the seeds drawn
        label += seeds
        if bases and baseline is not curves[0]:
            label += f" (vs {baseline.label})"
        # against the baseline's stage of the same name; a stage the baseline lacks, against each of the baseline's
        # stages over its tokens: its line breaks where the baseline's data changes too
        own = dict(baseline.segments()) if bases else {}
        lines = [line_of(part, base, logx) for stage, part in c.segments()
                 for base in ([own[stage]] if stage in own else list(own.values()) or [None])]
        if bases and sum(int(np.isfinite(values[0]).sum()) for _, values in lines) < 2:  # one point draws nothing
            label += " (too few points where it and its baseline both validated to draw)"
        if i in blown:  # its farthest value drawn (none where no point of it meets its baseline's: its own)
            drawn = np.concatenate([values.ravel() for _, values in lines])
            drawn = drawn[np.isfinite(drawn)] if np.isfinite(drawn).any() else c.values[np.isfinite(c.values)]
            label += f" (leaves the axis: up to {drawn[np.abs(drawn).argmax()]:.3g})"
        else:
            kept += [values for _, values in lines if np.isfinite(values).any()]
        for tokens, values in lines:
            ax.plot(tokens, values.mean(0), color=color, linestyle=style, linewidth=width, label=label,
                    marker="o" if len(tokens) < 20 else None, markersize=3)
            label = None  # one legend entry for all of a curve's stages
            if len(values) > 1:
                ax.fill_between(tokens, values.min(0), values.max(0), color=color, alpha=0.18, linewidth=0)
    mark_stage_starts(ax, curves)
    if blown and kept:
        low, high = min(np.nanmin(v) for v in kept), max(np.nanmax(v) for v in kept)
        pad = 0.05 * (high - low or abs(high) or 1.0)
        ax.set_ylim(low - pad, high + pad)
    ax.set_title(title)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(EngFormatter())  # a log axis over less than a decade labels only minor ticks
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.grid(True, alpha=0.3, which="both")
    if caveat:
        ax.text(0.01, 0.01, caveat, transform=ax.transAxes, ha="left", va="bottom", fontsize=8, color="tab:red")
    if any(c.num_seeds > 1 for c in curves):
        paired = bases and any(c.pairs_with(b) for c, b in zip(curves[1:], bases[1:]))
        band = "bands: lowest to highest seed" + ("; of an idea run with the baseline's seeds, each seed minus the "
                                                  "baseline's run of the same seed" if paired else "")
        ax.text(0.99, 0.01, band, transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, alpha=0.7)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", bbox_inches="tight" if many else None)
    write_atomic(path, png.getvalue())
    return path


def exploded(curves: list[Curve]) -> frozenset[int]:
    """The curves whose loss rose past twice the highest first loss (a run's untrained one, ~ln(vocab)): an lr that
    blew up to 1e10 without a NaN drew every other run as a flat line at 0. None where no curve stays below."""
    ceiling = 2 * max(float(np.nanmax(c.values[:, 0])) for c in curves)
    blown = frozenset(i for i, c in enumerate(curves) if np.nanmax(c.values) > ceiling)
    return blown if len(blown) < len(curves) else frozenset()


def line_of(c: Curve, base: Curve | None, logx: bool) -> tuple[np.ndarray, np.ndarray]:
    """The tokens and values[seed, point] drawn for a curve (of one stage); with `base`, minus the baseline's."""
    tokens, values = c.tokens, c.values
    if base is not None:
        # within SAME of the baseline's ends: a stage's first point (rows batching: a few tokens before or after the
        # baseline's) is its start validation, which approx reads as the baseline's own
        inside = ((tokens >= base.tokens[0] * (1 - SAME)) & (tokens <= base.tokens[-1] * (1 + SAME))
                  & (tokens > 0 if logx else True))
        tokens = tokens[inside]
        values = c.minus(base, tokens)
        readable = np.array([approx(base, t) is not None for t in tokens], dtype=bool)
        values[:, ~readable] = np.nan  # a break in the line, not a line across the baseline's gap
    elif logx:  # 0 tokens has no place on a log axis: matplotlib clips it far left, and the line from it ran flat
        keep = tokens > 0  # at the next point's value to the axis' edge, a plateau the run never had
        tokens, values = tokens[keep], values[:, keep]
    return tokens, values


def mark_stage_starts(ax: Any, curves: list[Curve]) -> None:
    """A dotted line where a curriculum stage begins, named: the lines break there, as the data changes."""
    starts = sorted({(float(part.tokens[0]), stage) for c in curves for stage, part in c.segments()[1:]})
    for tokens, stage in starts:
        ax.axvline(tokens, color="gray", linestyle=":", linewidth=0.9)
        ax.text(tokens, 1.0, f" {stage}", transform=ax.get_xaxis_transform(), va="top", fontsize=7, color="gray")


def plot_all(groups: list[Group], out: Path, kinds: list[str], smooth: dict[str, float], logx: bool) -> list[Path]:
    """For each kind (validation, train) and metric: the curves, and their difference from the baseline."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "it is a file, not a directory" if out.is_file() else e.strerror or e
        raise OutputError(f"cannot write the plots into {out} ({why}); choose another --out DIR") from None
    files = []
    caveat = ("these runs use different tokenizers: a loss per token and tokens seen do not compare across them"
              if tokenizer_note(groups) else "")
    for kind in kinds:
        unit = smoothing_unit(groups, kind)
        for metric, ylabel in METRICS.items():
            all_curves = [curve(g, kind, metric, smooth[kind], unit) for g in groups]
            curves = [c for c in all_curves if c is not None]
            if not curves:
                continue
            has_baseline = all_curves[0] is not None
            bases = [all_curves[j] or all_curves[0] for c, j in zip(all_curves, baselines(groups)) if c is not None]
            note = f", smoothed {smooth[kind]}" if smooth[kind] > 0 else ""
            blown = exploded(curves) if metric == "loss" else frozenset()
            files.append(draw(curves, f"{kind} {metric}{note}", ylabel, out / f"{kind}_{metric}.png", logx,
                              has_baseline, blown=blown, caveat=caveat))
            if len(curves) > 1 and has_baseline:
                index = {id(c): i for i, c in enumerate(curves)}  # a difference from a baseline that blew up too
                apart = frozenset(i for i, (c, b) in enumerate(zip(curves, bases))
                                  if c is not b and (i in blown or index[id(b)] in blown))
                files.append(draw(curves, f"{kind} {metric} minus the baseline's ({BETTER[metric]}){note}",
                                  f"{metric} - baseline {metric}", out / f"{kind}_{metric}_vs_baseline.png", logx,
                                  True, bases, apart, caveat))
    for stale in [out / f"{kind}_{metric}{end}.png" for kind in kinds for metric in METRICS
                  for end in ("", "_vs_baseline")]:  # an earlier comparison's, of runs no longer in this one (the
        # train curves of a --train plot stay when this one leaves them out)
        if stale not in files:
            stale.unlink(missing_ok=True)
    return files


def human(tokens: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if float(f"{tokens / size:.3g}") >= 1:  # as it is written: 999,600 is "1M", not "1e+03k"
            return f"{tokens / size:.3g}{unit}"
    return f"{tokens:.0f}"


def comparison_table(groups: list[Group], columns: int = 4) -> str:
    """Validation loss of every configuration at the same token counts, its difference from the baseline and accuracy.

    The token counts span what every configuration has reached, so no number is an extrapolation.
    """
    matches = dict(zip(map(id, groups), baselines(groups)))
    rows = [(g, curve(g, "validation", "loss"), curve(g, "validation", "accuracy")) for g in groups]
    left_out = [g.label for g, loss, _ in rows if loss is None]
    rows = [row for row in rows if row[1] is not None]
    if not rows:
        return "no validation records in these runs yet\n"
    # a run that never validated past 0 (an lr of a sweep that diverged before its first interval) gets "-" past
    # it: the columns spanned its 0 tokens too, and left every row a column at 0 alone, +0.0000 the baseline. One
    # that got part-way still ends the columns (short_runs_note): they compare every row, the baseline's too
    trained = [row for row in rows if row[1].span[1] > 0] or rows
    start, end = max(loss.span[0] for _, loss, _ in trained), min(loss.span[1] for _, loss, _ in trained)
    if start > end:
        return ("the runs' validation points do not overlap in tokens (one ends before another's first validation), "
                "so they cannot be compared at equal tokens; train them longer\n")
    curves = [loss for _, loss, _ in trained]
    least, shared = most_shared_points(curves, start, end, columns - 1)
    if any(t > 0 for t in shared):
        points = [shared[i] for i in np.unique(np.linspace(0, len(shared) - 1, columns).round().astype(int))]
    else:  # no point in common (rows against packed batching): read every curve between its own points
        points = list(np.unique(np.linspace(start, end, columns).round()))
    points = [t for t in points if any(approx(c, t) is not None for c in curves)] or points[:1]  # no all-"-" column
    end = points[-1]
    baseline_first = rows[0][0] is groups[0]
    header = ["run", "seeds", *[f"loss@{human(t)}" for t in points]]
    header += [f"vs baseline@{human(end)}"] if baseline_first else []
    header += [f"accuracy@{human(end)}"]
    table, own_baselines = [header], set()  # rows whose 'vs baseline' is "-" by definition: they are baselines
    losses = {id(group): loss for group, loss, _ in rows}
    for i, (group, loss, accuracy) in enumerate(rows):
        cells = [cell(loss, t, lambda v: f"{v.mean():.4f}" + (f" ±{v.std(ddof=1):.4f}" if len(v) > 1 else ""))
                 for t in points]
        base = groups[matches[id(group)]]
        base = base if id(base) in losses else groups[0]
        row = [group.label + (" (baseline)" if base is group and baseline_first else ""), str(loss.num_seeds), *cells]
        if baseline_first:
            vs = "" if base is groups[0] and same_settings(group, base, HOW_IT_RAN) else f" (vs {base.label})"  # or at
            # max_steps: one that sets a cosine schedule's every lr
            vs = f" (vs {base.label}: none at its settings)" if unmatched(group, groups, matches[id(group)]) else vs
            marks = [approx(loss, end), approx(losses[id(base)], end)]
            diff = loss.minus(losses[id(base)], np.array(end), "measured").mean()  # paired: on the seeds both ran
            spread = loss.spread_minus(losses[id(base)], end)
            pairs = loss.fewer_pairs(losses[id(base)])
            diff_text = (f"{diff:+.4f}" + ("" if spread is None else f" ±{spread:.4f}")
                         + (f" ({pairs})" if pairs else ""))
            row += ["-" if base is group or None in marks else f"{max(marks)}{diff_text}{vs}"]
            own_baselines |= {i} if base is group else set()
        row += [cell(accuracy, end, lambda v: f"{v.mean():.4f}")]
        table.append(row)
    vs_column = 2 + len(points) if baseline_first else None
    cells = [c for i, row in enumerate(table[1:]) for j, c in enumerate(row)
             if j >= 2 and not (j == vs_column and i in own_baselines)]
    notes = [reading_note(cells, least, len(curves), any(t > 0 for t in shared)), *short_runs_note(trained),
             *untrained_note([g for g, _, _ in rows if not any(g is t for t, _, _ in trained)]),
             *tokenizer_note([g for g, _, _ in rows]), *size_note([g for g, _, _ in rows]),
             *held_out_note([g for g, _, _ in rows]),
             *settings_notes([g for g, _, _ in rows], [groups[matches[id(g)]] for g, _, _ in rows])]
    notes += [f"Left out, with no validation record yet: {', '.join(left_out)}."] if left_out else []
    notes += short_seeds_note(rows)
    return "\n".join([*aligned(table), "", *notes]) + "\n"


def short_seeds_note(rows: list[tuple[Group, Curve, Curve | None]]) -> list[str]:
    """The seeds a row's curve left out (under half its furthest seed's validations: still training, or stopped
    early), which its mean and band then moved without: 'seeds 2' read as if the third did not exist."""
    said = []
    for group, loss, _ in rows:
        validated = [run.trained_seed for run in group.runs if any(r.get("loss") is not None for r in run.validation)]
        if missing := [seed or "default" for seed in validated if seed not in loss.seeds]:
            said.append(f"{group.label} seed {', '.join(missing)}")
    return [(f"Note: left out of their rows' means, with under half the validations of their furthest seed (still "
             f"training, or stopped early): {'; '.join(said)}.")] if said else []


def short_runs_note(rows: list[tuple[Group, Curve, Curve | None]]) -> list[str]:
    """The rows whose runs validated far less far than the longest (failed, stopped or still training), which end
    every row's columns: a table cut at a crashed idea's 31k tokens read like one of runs that stopped there."""
    ends = {id(group): loss.span[1] for group, loss, _ in rows}
    longest = max(ends.values())
    short = [group for group, _, _ in rows if ends[id(group)] < SHORT * longest]
    if not short:
        return []
    said = ", ".join(f"{group.label} at {human(ends[id(group)])}" for group in short)
    note = (f"Note: the columns stop where the shortest runs' validations do ({said}; the longest reach "
            f"{human(longest)} tokens): a run that trains fewer tokens by its settings, or that failed, was stopped "
            f"or is still training, compares only as far as it got (a sweep's summary, python -m lmplay.sweep DIR, "
            f"says which).")
    return [note]


def untrained_note(groups: list[Group]) -> list[str]:
    """The rows with no validation past 0, whose columns past it are "-"."""
    return [(f"Note: {', '.join(g.label for g in groups)} validated only before training (it diverged, failed, or "
             f"stopped before its first validation interval): '-' past 0 tokens; a sweep's summary, python -m "
             f"lmplay.sweep DIR, says why.")] if groups else []


def aligned(table: list[list[str]]) -> list[str]:
    """The table's lines: the first column left-aligned, the numbers right-aligned, a rule under the header."""
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in table]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def reading_note(cells: list[str], least: int, num_rows: int, shared: bool) -> str:
    """How the table's numbers were read: at shared validation points, or off straight lines (~), or not at all (-)."""
    where = (("at token counts where every run validated (within 2%)" if least == num_rows else
              f"at token counts where the runs of {least} of the {num_rows} rows validated (within 2%)")
             if shared else
             "read off a straight line between each run's own validation points, as no token count past 0 has a "
             "validation point of every run (different batching, or validation cadences)")
    where += "; ~ marks a value read off a straight line between a run's validation points" if any(
        c.startswith("~") for c in cells) else ""
    where += (f"; - marks a run whose validation points around that count are further apart than {GAP:.0%} of it "
              f"and than its usual spacing (a straight line across that gap would make the value up)"
              ) if "-" in cells else ""
    return (f"Validation loss at equal tokens seen, {where}; ± is the std over seeds, and on 'vs baseline' the std "
            "of one seed's difference (paired with the baseline's run of the same seed, on the seeds both ran: "
            "'(2 pairs)' where the row ran more); 'vs baseline' < 0 means lower loss than the baseline; an idea swept "
            "at several settings is compared with the baseline at its own settings.")


SAME = 0.02  # a validation point this close to the asked tokens (a fraction of them) stands for it
LEGEND_INSIDE = 8  # lines a legend inside the axes can list without covering them
SHORT = 0.8  # a row whose runs validated to less than this fraction of the longest's tokens is said to be short
GAP = 0.5  # the widest gap between two validation points, as a fraction of the tokens between them, read across
NEAR = 0.1  # a value this close to one of a run's own validation points (a fraction of the tokens) is read off


def approx(curve: Curve, tokens: float) -> str | None:
    """"" where every seed of the curve has a validation point of its own at `tokens` (within SAME); "~"
    where a seed's value there is read off a straight line between two of its points that are close: one of them
    within NEAR of `tokens` (seeds of rows batching validate a few % apart), or at most GAP x `tokens` apart, or no
    further apart than the run's regular cadence past 0 (not from 0 to the first validation); None where a seed has
    no such two: a run validated only at 0 and at its end would read as a line between them, and two identical runs,
    one validated that way, differed by 0.7."""
    marks = []
    for seed, cadence in zip(curve.seed_tokens, curve.cadences):  # a seed's tokens ascend: found by bisection, as
        i = int(np.searchsorted(seed, tokens, side="left"))  # a scan of every point per point made --train of
        j = int(np.searchsorted(seed, tokens, side="right")) - 1  # 200k records 7.5 minutes
        above, below = (seed[i] if i < len(seed) else np.inf), (seed[j] if j >= 0 else -np.inf)
        distance = min(above - tokens, tokens - below)
        if distance <= SAME * tokens:
            marks.append("")
            continue
        gap = above - below  # not across the start (0 to the first validation, the steepest part) by cadence:
        regular = 1.5 * cadence if below > 0 else 0.0  # an identical run validated more often read 0.68 lower there
        if gap == np.inf or (distance > NEAR * tokens and gap > max(GAP * tokens, regular)):
            return None
        marks.append("~")
    return max(marks)


def cell(curve: Curve, tokens: float, show: Callable[[np.ndarray], str]) -> str:
    """The curve's seeds' values at `tokens` as `show` writes them, marked as approx() says; "-" where it says None."""
    mark = approx(curve, tokens)
    return "-" if mark is None else mark + show(curve.measured(tokens))


def most_shared_points(curves: list[Curve], start: float, end: float, wanted: int) -> tuple[int, list[float]]:
    """(n, the counts where n of the curves have points of their own): the most curves that share `wanted` counts
    past 0, else that share the most. A run validated more rarely than the rest (at 0 and its end only) would
    leave every row just those two columns; it gets "-" between them instead."""
    found = {n: shared_points(curves, start, end, n) for n in range(len(curves), 0, -1)}
    past_0 = {n: sum(t > 0 for t in points) for n, points in found.items()}
    enough = [n for n in found if past_0[n] >= wanted and n > 1]
    least = enough[0] if enough else max(found, key=lambda n: (past_0[n] if n > 1 else 0, n))
    return least, found[least]


def shared_points(curves: list[Curve], start: float, end: float, least: int | None = None) -> list[float]:
    """The token counts in [start, end] where every curve (or `least` of them) has a validation point of its own
    (within SAME, for seeds whose rows hold a few more or fewer tokens), ascending. A value between two validation points is a
    straight line across a curve that bends: two identical runs, one stopped at step 12, the other validated at
    steps 10 and 20, differed by 0.04 at step 12; and runs that validated only at 0 and at their end would show a
    line from one to the other as their losses in between."""
    found: list[float] = []
    for t in sorted({float(t) for c in curves for t in c.tokens if start <= t <= end}, reverse=True):
        near_found = found and found[-1] - t <= SAME * found[-1]  # the same point, another seed's count
        if not near_found and sum(np.abs(c.tokens - t).min() <= SAME * t for c in curves) >= (least or len(curves)):
            found.append(t)
    return found[::-1]


def differing_values(groups: list[Group], value: Callable[[Run], Any]) -> str:
    """`label v1/v2, label v3` when the groups' runs hold more than one value (None: unknown, left out); else ""."""
    found = {g.label: sorted({value(r) for r in g.runs} - {None}) for g in groups}
    if len({v for values in found.values() for v in values}) < 2:
        return ""
    def shown(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else str(v)
    return ", ".join(label if all(f"={v}" in label for v in values) else  # `tokenizer=gpt2` said it: not again
                     f"{label} {'/'.join(map(shown, values))}" for label, values in found.items() if values)


def size_note(groups: list[Group]) -> list[str]:
    """A line when the configurations' models differ in size by more than 1%."""
    if not sizes_differ([r.parameters for g in groups for r in g.runs]):
        return []
    told = differing_values(groups, lambda r: r.parameters)
    return [f"Note: these runs' models differ in size (parameters: {told}): {SIZE_CAUSE}."]


def tokenizer_note(groups: list[Group]) -> list[str]:
    """A line when the runs tokenize differently: their losses are per token of different sizes (a byte, a
    GPT-2 token of ~4 bytes) and their token counts count different things."""
    told = differing_values(groups, lambda r: r.tokenizer)
    return [(f"Note: these runs use different tokenizers ({told}): a loss per token and tokens seen do not compare "
             f"across tokenizers; compare runs of one tokenizer.")] if told else []


def settings_notes(groups: list[Group], bases: list[Group]) -> list[str]:
    """Lines for settings the labels do not show (their .hydra/config.yaml): seeds of a group that trained with
    different settings (a command repeated after its exp file changed is averaged as another seed of the first),
    and an idea whose baseline (`bases`, one a group) trained with settings of its own that no command typed."""
    notes = []
    for group in groups:
        runs = [r for r in group.runs if r.settled]
        codes = code_settings([trained_code(r.path) for r in runs]) if len(runs) > 1 else [{}] * len(runs)  # torch
        mixed = differing_settings([{**trained_settings(r.settled), **code} for r, code in zip(runs, codes)])
        if mixed:
            notes.append(f"Note: the runs averaged as {group.label} did not all train with the same settings "
                         f"({settings_text(mixed)}): a command repeated after its settings or the model's code "
                         f"changed counts as another seed of the first: a run_name does not keep it apart, typing "
                         f"the changed setting does (for changed model code, plot its runs apart).")
    for group in groups:
        for run in (r for r in group.runs if r.resumed_changes):
            said = "; ".join(f"at step {c.get('step')}: " + ", ".join(f"{k} {'/'.join(map(str, v))}" if isinstance(
                v, list) else str(k) for k, v in c["changed"].items()) for c in run.resumed_changes)
            notes.append(f"Note: {run.path.name}, a run of {group.label}, was resumed with other settings ({said}): "
                         f"its curve mixes them, and it is labelled by the last.")
    for group, base in zip(groups, bases):
        if base is group or not (group.runs[0].settled and base.runs[0].settled):
            continue
        typed = setting_keys(group) | setting_keys(base)
        untyped = {key: found for key, found in differing_settings([trained_settings(base.runs[0].settled),
                                                                    trained_settings(group.runs[0].settled)]).items()
                   if key not in (*typed, "tokenizer") and not any(key.startswith(f"{t}.") for t in (*typed, "model"))
                   and not any(t.startswith(f"{key}.") for t in typed)}  # curriculum.stages.0.epochs=2 typed
        if untyped:
            notes.append(f"Note: {group.label} and its baseline {base.label} also differ in settings no command "
                         f"typed ({settings_text(untyped)}, as {base.label}/{group.label}): the difference between "
                         f"them is not the idea's alone.")
    return notes


def held_out_note(groups: list[Group]) -> list[str]:
    """A line when the configurations validated on different held-out text."""
    told = differing_values(groups, lambda r: r.final_validation.get("held_out_tokens") if r.final_validation else None)
    return [f"Note: these runs' validation sets differ (held-out tokens: {told}): {HELD_OUT_CAUSE}."] if told else []
