"""How much the KV cache buys: tokens/s with and without it, and whether a late token costs what an early one does.

    python benchmarks/generate.py                              # gpt2ish_mini's shape, context 1024, CPU
    python benchmarks/generate.py --exp gpt2ish --tokenizer gpt2 --device cuda
    python benchmarks/generate.py --checkpoint outputs/gpt2/model.lmp

Targets: cached at least 5x faster than uncached for 512 new tokens; the token at position ~900 within
1.3x of the token at position ~10. Random weights are as fast as trained ones, so no training is needed.
"""

import argparse
import statistics
import time

import torch

from lmplay.data.tokenizers import get_tokenizer
from lmplay.generation.config import GenerationConfig
from lmplay.generation.decode import generate_tokens
from lmplay.generation.loading import load_model
from lmplay.runner import get_runner

PROMPT_LEN = 8


def build(args: argparse.Namespace) -> torch.nn.Module:
    if args.checkpoint:
        return load_model(args.checkpoint, args.device)[0]
    tokenizer = get_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    model = get_runner(args.exp).build_model(vocab_size=tokenizer.vocab_size, tokenizer=args.tokenizer,
                                             context_len=args.context_len)
    return model.to(args.device).eval()


def decode(model: torch.nn.Module, new_tokens: int, use_cache: bool) -> list[float]:
    """Greedy decoding of `new_tokens` after a PROMPT_LEN prompt; the time at which each token was ready."""
    stamps = [time.perf_counter()]
    config = GenerationConfig(max_new_tokens=new_tokens, use_cache=use_cache, stop_at_eot=False)
    prompt = [list(range(PROMPT_LEN))]
    generate_tokens(model, prompt, config, eot_id=0, on_step=lambda _: stamps.append(time.perf_counter()))
    return stamps


def tokens_per_second(model: torch.nn.Module, new_tokens: int, use_cache: bool) -> float:
    stamps = decode(model, new_tokens, use_cache)
    return new_tokens / (stamps[-1] - stamps[0])


def step_time(stamps: list[float], position: int, spread: int = 10) -> float:
    """Median seconds to produce the token after the one at `position` (the window holds position + 1 tokens)."""
    steps = range(position - PROMPT_LEN - spread, position - PROMPT_LEN + spread + 1)
    return statistics.median(stamps[i + 2] - stamps[i + 1] for i in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="gpt2ish_mini", help="a registered experiment, random weights")
    parser.add_argument("--tokenizer", default="bytes", choices=["bytes", "gpt2"])
    parser.add_argument("--context-len", type=int, default=1024)
    parser.add_argument("--checkpoint", help="benchmark this checkpoint's model instead of --exp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--early", type=int, default=10, help="the early position")
    parser.add_argument("--late", type=int, default=900, help="the late position")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build(args)
    if args.late + 10 > model.context_len:
        parser.error(f"--late {args.late} needs a context of at least {args.late + 10} (the model has "
                     f"{model.context_len})")
    print(f"model: {args.checkpoint or args.exp}, {model.parameter_count():,} parameters, tokenizer "
          f"{model.tokenizer_name}, context {model.context_len}, device {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    with torch.no_grad():
        decode(model, 32, use_cache=True)  # warm-up: allocator, kernels, caches
        cached = max(tokens_per_second(model, args.new_tokens, True) for _ in range(args.repeats))
        uncached = tokens_per_second(model, args.new_tokens, False)  # minutes long on a CPU: once
        positions = [decode(model, args.late + 10 - PROMPT_LEN, use_cache=True) for _ in range(args.repeats)]
    early = min(step_time(s, args.early) for s in positions)
    late = min(step_time(s, args.late) for s in positions)
    print(f"{args.new_tokens} new tokens with the KV cache:    {cached:10.1f} tokens/s")
    print(f"{args.new_tokens} new tokens without a cache:      {uncached:10.1f} tokens/s")
    print(f"cache speed-up: {cached / uncached:.1f}x (target >= 5x)")
    print(f"time per token at position ~{args.early}: {early * 1e3:.2f} ms, at ~{args.late}: {late * 1e3:.2f} ms; "
          f"late / early = {late / early:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
