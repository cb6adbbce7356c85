"""`python -m experiments.unified_embed.export IN.lmp OUT.lmp [--replace]`: the checkpoint with its unified embedding
collapsed (an existing OUT is written over only with --replace, and kept as OUT.bak; another run's model.lmp is
set aside with its run in replaced_<time>/, while IN exported in place keeps its run, which goes on from it).

The exported model has the baseline's structure and parameter count and gives the same logits;
`lmplay.generate` loads it like any checkpoint of this experiment. Training can resume from it, with
the optimizer's moments started afresh: the wide table they belonged to is gone.
"""

import argparse
from pathlib import Path

from lmplay.cli import run_main
from lmplay.errors import ConfigError
from lmplay.files import checkpoint_file
from lmplay.generation.loading import model_of
from lmplay.runner import checkpoint


def export(src: Path, dst: Path, replace: bool = False) -> None:
    in_place = dst.exists() and checkpoint_file(src).resolve() == dst.resolve()  # the run goes on from it
    checkpoint.check_out(dst, replace, in_place=in_place)
    ckpt = checkpoint.load(src)
    model, exp = model_of(ckpt, src)
    if not hasattr(model, "export"):
        raise ConfigError(f"{src} is a checkpoint of {exp}, which has no unified embedding to collapse")
    plain = model.export()
    if plain.parameter_count() == model.parameter_count():  # exporting again would only drop the optimizer state
        raise ConfigError(f"{src}'s embedding is collapsed already (an export); use it as it is")
    ckpt["components"]["model"] = checkpoint.model_part(plain)
    if "optimizers" in ckpt["components"]:  # a training checkpoint (save_model's has none)
        ckpt["components"]["optimizers"]["state"] = {"optimizer": None}  # its moments were the wide table's: left out
    aside = checkpoint.write_out(ckpt, dst, in_place)
    print(f"wrote {dst}: {exp} with a plain embedding table, {model.parameter_count():,} -> "
          f"{plain.parameter_count():,} parameters")
    if aside:
        print(f"the run it replaced (checkpoints, stats, TensorBoard files) is kept in {aside}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.unified_embed.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("src", metavar="IN.lmp", type=Path, help="a checkpoint of unified_embed (or its run dir)")
    parser.add_argument("dst", metavar="OUT.lmp", type=Path, help="where the collapsed checkpoint goes")
    parser.add_argument("--replace", action="store_true", help="write over an existing OUT (kept as OUT.bak)")
    args = parser.parse_args(argv)
    export(args.src, args.dst, args.replace)


def cli() -> None:
    run_main(main)


if __name__ == "__main__":
    cli()
