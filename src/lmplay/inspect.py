"""`python -m lmplay.inspect PATH.lmp` (or a run dir, for its model.lmp): what a checkpoint holds, without running
any of it."""

import argparse

from lmplay.cli import printable, run_main


def describe(path: str) -> str:
    from lmplay.files import checkpoint_file
    from lmplay.runner import checkpoint

    ckpt = checkpoint.load(path)  # its layout checked: an experiment name and a model
    path = checkpoint_file(path)  # the file read, where a run dir was given
    parts = ckpt["components"]
    weights = parts["model"]["state"]["weights"]
    lines = [f"checkpoint   {path} (format {ckpt['format_version']})", f"experiment   {ckpt['exp']}"]
    if "runner" in parts and "curriculum" in parts:
        progress = parts["runner"]["state"]["progress"]
        position = parts["curriculum"]["state"]["position"]
        lines += [f"stage        {position.get('stage_name', position.get('stage', '?'))}",
                  f"step         {progress['step']}", f"samples      {progress['samples']:,}",
                  f"tokens       {progress['tokens']:,}"]
    else:
        lines.append("training     none yet (a model alone, e.g. imported: training it starts at step 0)")
    distinct = {t.data_ptr(): t for t in weights.values()}.values()  # a tied lm_head shares the embedding's tensor
    count = parts["model"]["state"].get("parameters")  # where saved: the weights also hold persistent buffers
    count = f"{count:,}" if isinstance(count, int) else f"{sum(t.numel() for t in distinct):,} (with any buffers)"
    lines += [f"parameters   {count}",
              f"model        {parts['model']['state_args']}",
              *(["config:", *("  " + line for line in config.splitlines())] if (config := str(ckpt.get("config") or ""))
                else ["config       none (no training run wrote it: saved from Python, or imported)"])]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmplay.inspect", description=__doc__)
    parser.add_argument("checkpoint")
    print(printable(describe(parser.parse_args(argv).checkpoint)))  # the checkpoint's strings are data


def cli() -> None:
    run_main(main)


if __name__ == "__main__":
    cli()
