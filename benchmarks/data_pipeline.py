"""Is the data layer ever the bottleneck? Data tokens/s vs training tokens/s on the embedded corpus.

For each tokenizer (bytes, gpt2):
  tokenize        cold tokenization of the whole corpus into a fresh cache (once per machine: it is cached)
  batch           one epoch of batches from the cache, `rows` and `packed` (the cost paid every step)
  tokenize+batch  both over one epoch: the first run's worst case
  train           forward + backward + AdamW step of a small GPT2ish (2 blocks, 128 wide) on the same batches
Tokens are the ones that count in the loss (Batch.num_tokens) on both sides. Target: data >= 10x train.

    python benchmarks/data_pipeline.py
    python benchmarks/data_pipeline.py --context-len 1024 --batch-size 16 --device cuda
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

import datasets  # noqa: E402
import torch  # noqa: E402
from train_loop import at_least, torch_device

from experiments.gpt2ish.model import GPT2ish  # noqa: E402
from lmplay.data.curriculum import Curriculum  # noqa: E402
from lmplay.data.tokenizers import get_tokenizer  # noqa: E402
from lmplay.device import synchronize
from lmplay.errors import LmplayError


def shakespeare(cache_dir: str, batching: str) -> Curriculum:
    return Curriculum([{"name": "shakespeare", "datasets": ["shakespeare"], "epochs": 1}], batching=batching,
                      validation_fraction=0.02, cache_dir=cache_dir)


def data_side(tokenizer: str, batching: str, cache_dir: str, args) -> tuple[float, float, list]:
    """(seconds to prepare, seconds for an epoch of batches, the batches)."""
    c = shakespeare(cache_dir, batching)
    started = time.perf_counter()
    c.prepare(tokenizer, args.context_len, 0)
    prepared = time.perf_counter()
    batches = []
    while (batch := c.next_batch(args.batch_size, True)) is not None:
        batches.append(batch)
    return prepared - started, time.perf_counter() - prepared, batches


def train_side(tokenizer: str, batches: list, args) -> float:
    """Training tokens/s of a small GPT2ish on the first batches (after one warm-up step)."""
    torch.manual_seed(0)
    vocab = get_tokenizer(tokenizer).vocab_size
    model = GPT2ish(vocab, args.context_len, num_blocks=2, embed_dim=128, num_heads=4, tokenizer=tokenizer)
    model.to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch) -> None:
        loss_sum, _ = model.loss_terms(batch.inputs.to(args.device), batch.targets.to(args.device))
        (loss_sum / batch.num_tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])
    timed = batches[1:1 + args.train_steps]
    synchronize(torch.device(args.device))
    started = time.perf_counter()
    for batch in timed:
        step(batch)
    synchronize(torch.device(args.device))
    return sum(b.num_tokens for b in timed) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context-len", type=at_least(2), default=256)
    parser.add_argument("--batch-size", type=at_least(1), default=32)
    parser.add_argument("--train-steps", type=at_least(1), default=4)
    parser.add_argument("--device", type=torch_device, default="cpu")
    parser.add_argument("--tokenizers", nargs="+", default=["bytes", "gpt2"])
    args = parser.parse_args()
    for tokenizer in args.tokenizers:
        try:
            get_tokenizer(tokenizer)  # building the gpt2 tables is a one-time cost, not tokenization
        except LmplayError as e:
            parser.error(str(e))
    datasets.disable_progress_bars()
    print(f"embedded corpus, context {args.context_len}, batch {args.batch_size}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'tokenizer':9} {'batching':8} {'tokens':>10} {'tokenize/s':>12} {'batch/s':>12} {'tok+batch/s':>12} "
          f"{'train/s':>9} {'data/train':>10}")
    for tokenizer in args.tokenizers:
        for batching in ("rows", "packed"):
            with tempfile.TemporaryDirectory() as cache_dir:  # cold: nothing cached
                prepare_s, batch_s, batches = data_side(tokenizer, batching, cache_dir, args)
                tokens = sum(b.num_tokens for b in batches)
                train = train_side(tokenizer, batches, args)
                both = tokens / (prepare_s + batch_s)
                print(f"{tokenizer:9} {batching:8} {tokens:>10,} {tokens / prepare_s:>12,.0f} {tokens / batch_s:>12,.0f} "
                      f"{both:>12,.0f} {train:>9,.0f} {both / train:>9,.0f}x")
    print("tokenize/s: cold, once per machine; batch/s: what every step pays; data/train uses tok+batch/s")


if __name__ == "__main__":
    main()
