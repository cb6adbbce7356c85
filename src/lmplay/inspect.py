"""`python -m lmplay.inspect PATH.lmp`: what a checkpoint holds, without running any of it."""

import argparse

from lmplay.cli import report
from lmplay.errors import LmplayError


def describe(path: str) -> str:
    from lmplay.runner import checkpoint

    ckpt = checkpoint.load(path)
    parts = ckpt["components"]
    progress = parts["runner"]["state"]["progress"]
    weights = parts["model"]["state"]["weights"]
    position = parts["curriculum"]["state"]["position"]
    lines = [
        f"checkpoint   {path} (format {ckpt['format_version']})",
        f"experiment   {ckpt['exp']}",
        f"stage        {position.get('stage_name', position.get('stage', '?'))}",
        f"step         {progress['step']}",
        f"samples      {progress['samples']:,}",
        f"tokens       {progress['tokens']:,}",
        f"parameters   {sum(t.numel() for t in weights.values()):,}",
        f"model        {parts['model']['state_args']}",
        "config:",
        *("  " + line for line in ckpt["config"].splitlines()),
    ]
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m lmplay.inspect", description=__doc__)
    parser.add_argument("checkpoint")
    args = parser.parse_args()
    try:
        print(describe(args.checkpoint))
    except LmplayError as e:
        report(e)


if __name__ == "__main__":
    cli()
