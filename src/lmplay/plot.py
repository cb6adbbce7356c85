"""`python -m lmplay.plot RUN_DIR... [--out DIR]` / `lmp_plotstats`: compare runs against a baseline.

Each RUN_DIR is a run dir (it holds stats.json) or any directory above run dirs (a sweep dir, all of
outputs/). Writes PNGs of validation (and with --train, training) loss and accuracy against tokens
seen, their difference from the baseline, and comparison.txt: the runs at equal tokens. The
baseline is the first run given (in a sweep, the lowest job number), or the one --baseline names.
"""

import argparse
import hashlib
import os
import sys
from pathlib import Path

from lmplay.cli import printable, run_main
from lmplay.errors import ConfigError
from lmplay.files import write_atomic
from lmplay.stats.plot import comparison_table, group_runs, pick_baseline, plot_all
from lmplay.stats.runs import load_runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lmplay.plot", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run dirs or sweep dirs")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where the PNGs and comparison.txt go (default: RUN_DIR/plots; with several dirs, "
                             "FIRST_RUN_DIR/plots_with_OTHER_NAMES, so a sweep's own plots stay)")
    parser.add_argument("--baseline", metavar="TEXT",
                        help="the baseline is the run labelled TEXT, or whose label or run dir name contains it, or "
                             "the run dir TEXT itself (default: the first run)")
    parser.add_argument("--train", action="store_true", help="also plot the training loss and accuracy")
    parser.add_argument("--smooth", type=float, default=0.8, metavar="S",
                        help="exponential smoothing of training curves, TensorBoard's weight per point of the most often "
                             "logged run (others by the tokens between their points): 0 (none) to <1 (default 0.8)")
    parser.add_argument("--smooth-validation", type=float, default=0.0, metavar="S",
                        help="the same for validation curves (default 0: each point is already an average)")
    parser.add_argument("--logx", action="store_true", help="log scale for tokens seen")
    args = parser.parse_args(argv)
    for name in ("smooth", "smooth_validation"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1)")
    return args


def default_out(run_dirs: list[Path]) -> Path:
    """RUN_DIR/plots; a comparison with other dirs goes beside it, named by them, not over the first one's own."""
    if len(run_dirs) == 1:
        return run_dirs[0] / "plots"
    others = "_".join(d.resolve().name for d in run_dirs[1:])
    elsewhere = any(d.resolve().parent != run_dirs[0].resolve().parent for d in run_dirs[1:])
    if len(others) > 80 or elsewhere:  # with a digest of their paths: the job dirs of one command in two sweeps are
        paths = "\n".join(str(d.resolve()) for d in run_dirs[1:])  # named alike, and long names alike in their first
        others = f"{others[:71]}_{hashlib.sha256(paths.encode()).hexdigest()[:8]}"  # 80 characters shared one dir
    return run_dirs[0] / f"plots_with_{others}"


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    skipped: list[str] = []
    runs = load_runs(args.run_dirs, skipped, train=args.train)
    for reason in skipped:
        print(f"note: left out: {printable(reason)}", file=sys.stderr)
    if not runs:
        raise ConfigError("no run here can be read; see the notes above")
    groups = pick_baseline(group_runs(runs), args.baseline)
    out = args.out or default_out(args.run_dirs)
    if args.out is None and out.is_symlink():  # a run dir from elsewhere: the plots would go wherever it points
        raise ConfigError(f"{out} is a symlink (to {os.readlink(out)}); remove it, or choose where the plots go with "
                          f"--out DIR")
    kinds = ["validation", "train"] if args.train else ["validation"]
    files = plot_all(groups, out, kinds, {"validation": args.smooth_validation, "train": args.smooth}, args.logx)
    table = comparison_table(groups)
    write_atomic(out / "comparison.txt", table)
    print(printable(table))  # labels are a run's .hydra/ text, from wherever the run dir came
    for path in [*files, out / "comparison.txt"]:
        print(f"wrote {printable(str(path))}")


def cli() -> None:
    run_main(main)


if __name__ == "__main__":
    cli()
