"""What the KV cache buys (tokens/s with and without it; late vs early tokens) and what a last-column prefill saves.

    python benchmarks/generate.py                          # the baseline: gpt2ish, GPT-2 vocabulary, context 1024
    python benchmarks/generate.py --exp gpt2ish_mini --tokenizer bytes      # a 1M-parameter model: a quick look
    python benchmarks/generate.py --device cuda --amp
    python benchmarks/generate.py --checkpoint outputs/gpt2/model.lmp
    python benchmarks/generate.py --prefill-only --exp gpt2ish_mini --context-len 512     # seconds, not minutes
    python benchmarks/generate.py --batch-rows 16 --exp gpt2ish_mini --tokenizer bytes --context-len 256

Targets: cached at least 5x faster than uncached for 512 new tokens; the token at position ~900 within
1.3x of the token at position ~10. Random weights are as fast as trained ones, so no training is needed.
The uncached run recomputes the whole window for every token: about 15 minutes on 2 CPU cores.

Attention over 900 cached keys is real work (2 x 900 x width multiply-adds per layer), so how close
late tokens come to early ones depends on the width: at the baseline's 768 the weights dominate; a tiny
model (gpt2ish_mini, 128 wide) spends about as much on attention at position 900 as on its weights.

A prefill (the prompt's windows, and every window without a cache) needs only the last column's logits;
an experiment whose forward takes `last_only` computes the output layer for that column alone.

`--batch-rows N`: N prompts of different lengths generating past the context in one batch, against the same
prompts one at a time (target: the batch faster). Each row's window slides at its own moment; the batch
rebuilds only that row's cache.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parents[1])]

from train_loop import at_least, torch_device

from lmplay.data.tokenizers import get_tokenizer
from lmplay.device import autocast
from lmplay.errors import LmplayError
from lmplay.generation.config import GenerationConfig
from lmplay.generation.decode import Decoder, Windows, generate_tokens
from lmplay.generation.loading import load_model
from lmplay.generation.sampling import pick_next
from lmplay.runner import get_runner

PROMPT_LEN = 4
SPREAD = 5  # a position's time is the median over the steps at positions within SPREAD of it


def build(args: argparse.Namespace) -> torch.nn.Module:
    if args.checkpoint:
        return load_model(args.checkpoint, args.device)[0]
    tokenizer = get_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    model = get_runner(args.exp).build_model(vocab_size=tokenizer.vocab_size, tokenizer=args.tokenizer,
                                             context_len=args.context_len)
    return model.to(args.device).eval()


def tokens_per_second(model: torch.nn.Module, new_tokens: int, use_cache: bool) -> float:
    """Greedy decoding of `new_tokens` after a PROMPT_LEN prompt, prefill included."""
    config = GenerationConfig(max_new_tokens=new_tokens, use_cache=use_cache, stop_at_eot=False)
    started = time.perf_counter()
    generate_tokens(model, [list(range(PROMPT_LEN))], config, eot_id=0)
    return new_tokens / (time.perf_counter() - started)


def step_times(model: torch.nn.Module, positions: list[int], repeats: int) -> dict[int, float]:
    """Median seconds of a cached decode step (pick the token, feed it) at each position (± SPREAD).

    The positions take turns step by step, so a machine busy with other work slows them alike; run one
    after the other, a late position would be measured at another moment than an early one.
    """
    config = GenerationConfig(stop_at_eot=False)
    times: dict[int, list[float]] = {p: [] for p in positions}
    for _ in range(repeats):
        decoders = {}
        for p in positions:
            prompt = [i % 256 for i in range(p - SPREAD)]  # the first step feeds position p - SPREAD
            decoder = Decoder(model, Windows([prompt], model.context_len, stride=1), model.new_cache(1), pad_id=0)
            decoders[p] = (decoder, decoder.prefill())
        for _ in range(2 * SPREAD + 1):
            for p, (decoder, logits) in decoders.items():
                started = time.perf_counter()
                tokens = pick_next(logits, config)
                decoders[p] = (decoder, decoder.advance(tokens, tokens.tolist()))
                times[p].append(time.perf_counter() - started)
    return {p: statistics.median(t) for p, t in times.items()}


def prefill_seconds(model: torch.nn.Module, rows: int, repeats: int) -> tuple[float, float]:
    """Median seconds of a cached prefill of `rows` full-context windows: (last column only, every column).
    The two take turns, so a busy machine slows them alike."""
    prompts = [[i % 256 for i in range(model.context_len)] for _ in range(rows)]
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for last_only in (True, False):
            decoder = Decoder(model, Windows(prompts, model.context_len, stride=1), model.new_cache(rows), pad_id=0)
            decoder.last_only = last_only
            started = time.perf_counter()
            decoder.prefill()
            times[last_only].append(time.perf_counter() - started)
    return statistics.median(times[True]), statistics.median(times[False])


def batch_seconds(model: torch.nn.Module, rows: int, new_tokens: int, repeats: int) -> tuple[float, float]:
    """Median seconds of `rows` prompts of different lengths decoded as one batch and one at a time, taking turns."""
    prompts = [[i % 256 for i in range(1 + 7 * r % model.context_len)] for r in range(rows)]
    config = GenerationConfig(max_new_tokens=new_tokens, stop_at_eot=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for batched in (True, False):
            started = time.perf_counter()
            for part in [prompts] if batched else [[p] for p in prompts]:
                generate_tokens(model, part, config, eot_id=0)
            times[batched].append(time.perf_counter() - started)
    return statistics.median(times[True]), statistics.median(times[False])


def report_batch(model: torch.nn.Module, rows: int, new_tokens: int, repeats: int) -> None:
    batch, alone = batch_seconds(model, rows, new_tokens, repeats)
    print(f"{rows} prompts of different lengths, {new_tokens} new tokens each (context {model.context_len}): one batch "
          f"{batch:.2f} s, one at a time {alone:.2f} s; the batch {alone / batch:.2f}x as fast (target > 1; median of "
          f"{repeats})", flush=True)


def report_prefill(model: torch.nn.Module, rows: int, repeats: int) -> None:
    if not Decoder(model, Windows([[0]], model.context_len, 1), None, 0).last_only:
        print(f"prefill: {type(model).__name__}.forward takes no last_only, so generation computes every column")
        return
    last_column, every_column = prefill_seconds(model, rows, repeats)
    ratio = every_column / last_column
    print(f"prefill of {rows} x {model.context_len} tokens: last column only {last_column:.3f} s, every column "
          f"{every_column:.3f} s; last column only {ratio if ratio >= 1 else 1 / ratio:.2f}x "
          f"{'faster' if ratio >= 1 else 'slower'} (median of {repeats})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="gpt2ish", help="a registered experiment, random weights")
    parser.add_argument("--tokenizer", default="gpt2", choices=["bytes", "gpt2"])
    parser.add_argument("--context-len", type=at_least(2), default=1024)
    parser.add_argument("--checkpoint", help="benchmark this checkpoint's model instead of --exp")
    parser.add_argument("--device", type=torch_device, default="cpu")
    parser.add_argument("--new-tokens", type=at_least(1), default=512)
    parser.add_argument("--early", type=at_least(1), default=10, help="the early position")
    parser.add_argument("--late", type=at_least(1), default=900, help="the late position")
    parser.add_argument("--repeats", type=at_least(1), default=3,
                        help="runs of each cached measurement (tokens/s: their median; per position: all pooled)")
    parser.add_argument("--prefill-rows", type=at_least(1), default=8, help="windows in the prefill measurement")
    parser.add_argument("--prefill-only", action="store_true", help="only the prefill measurement (seconds, not "
                        "the uncached run's minutes)")
    parser.add_argument("--batch-rows", type=at_least(2), help="only the measurement of a batch of this many prompts "
                        "of different lengths against them one at a time (--new-tokens each)")
    parser.add_argument("--amp", action="store_true", help="autocast to bf16")
    parser.add_argument("--threads", type=at_least(1), help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        model = build(args)
    except LmplayError as e:  # a mistake in the command (an unknown --exp, a missing checkpoint): one line
        raise SystemExit(f"error: {e}") from None
    positions_ok = SPREAD < args.early and args.late + SPREAD < model.context_len
    if not (args.prefill_only or args.batch_rows or positions_ok):
        parser.error(f"--early and --late must lie in [{SPREAD + 1}, {model.context_len - SPREAD}) (the context is "
                     f"{model.context_len})")
    print(f"model: {args.checkpoint or args.exp}, {model.parameter_count():,} parameters, tokenizer "
          f"{model.tokenizer_name}, context {model.context_len}, device {args.device}, "
          f"{torch.get_num_threads()} threads, amp {args.amp}, torch {torch.__version__}")
    with torch.no_grad(), autocast(torch.device(args.device), torch.bfloat16 if args.amp else None):
        tokens_per_second(model, 32, use_cache=True)  # warm-up: allocator, kernels, caches
        if args.batch_rows:
            return report_batch(model, args.batch_rows, args.new_tokens, args.repeats)
        report_prefill(model, args.prefill_rows, args.repeats)
        if args.prefill_only:
            return
        cached = statistics.median(tokens_per_second(model, args.new_tokens, True) for _ in range(args.repeats))
        per_step = step_times(model, [args.early, args.late], args.repeats)
        print("generating without the cache (the slow part) ...", file=sys.stderr, flush=True)
        uncached = tokens_per_second(model, args.new_tokens, False)  # minutes long on a CPU: once
    early, late = per_step[args.early], per_step[args.late]
    print(f"{args.new_tokens} new tokens with the KV cache:    {cached:10.1f} tokens/s (median of {args.repeats} runs)")
    print(f"{args.new_tokens} new tokens without a cache:      {uncached:10.1f} tokens/s (one run)")
    print(f"cache speed-up: {cached / uncached:.1f}x (target >= 5x)")
    print(f"time per token at position ~{args.early}: {early * 1e3:.2f} ms, at ~{args.late}: {late * 1e3:.2f} ms; "
          f"late / early = {late / early:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
