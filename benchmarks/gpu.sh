#!/usr/bin/env bash
# The GPU rows of benchmarks/README.md in one go, on a machine with one CUDA GPU:
#   1. the GPU tests (tests/test_gpu.py; CI has no GPU and skips them),
#   2. a real `python -m lmplay.train` of EXP at context 1024, bf16, compile, vocabulary padded to 64,
#      packed batches, at the largest of the given mini-batches that fits: median tokens/s and MFU,
#   2b. the same with fused_loss=false: compiled PyTorch's loss instead of lmplay's Triton kernels,
#   3. lmplay's loop against the bare PyTorch loop at that mini-batch (benchmarks/train_loop.py), then with
#      fused_loss=false, where both loops run PyTorch's loss: the loop's own cost, like for like,
#   4. where the step's GPU time goes at that mini-batch (benchmarks/profile_step.py), in lmplay's loop and the bare one,
#   5. the compiled loss alone, for each way of leaving the padding columns out (benchmarks/loss_kernels.py),
#      and again with coordinate-descent tuning, and the Triton backward kernel alone in each block x warps
#      configuration (never autotuned: its configuration is chosen from these numbers),
#   6. with INDUCTOR_OPTIONS=1, row 2 again under each of inductor's tuning options (`compile_options`),
#      and with CUDA graphs (triton.cudagraphs: no launch gaps between kernels); max_autotune_gemm is left
#      out: on torch 2.11 its autotuning crashed with an illegal memory access.
# Usage: bash benchmarks/gpu.sh [MINI_BATCH ...]     (default: 256 128 64 32; EXP=gpt2ish, STEPS=60)
#        SKIP="loop profile" bash benchmarks/gpu.sh 128  (parts 3, 4 left out: all of it takes ~10 minutes,
#        more than one call of a time-limited device; SKIP also takes tests and kernels)
#        INDUCTOR_OPTIONS=only bash benchmarks/gpu.sh MINI_BATCH    (part 6 alone; OPTIONS="a b" picks options)
# Logs and stats go to outputs/gpu_bench/.
set -uo pipefail
cd "$(dirname "$0")/.."
EXP=${EXP:-gpt2ish}; STEPS=${STEPS:-60}; OUT=outputs/gpu_bench
python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
  || { echo "gpu.sh needs a CUDA GPU, and torch sees none here"; exit 1; }
[ "$STEPS" -gt 15 ] || { echo "STEPS=$STEPS: the summary leaves out the first 10 records (compiling); use STEPS > 15"; exit 1; }
mkdir -p "$OUT"
failed=0  # any step that fails makes the exit status 1, after the others have run
want() { [[ " ${SKIP:-} " != *" $1 "* ]]; }  # SKIP="tests loop profile kernels" leaves those parts out
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
STAGES='curriculum.stages=[{name: shakespeare, datasets: [shakespeare], epochs: 50}]'  # enough tokens for STEPS
COMMON=(exp="$EXP" device=cuda amp=true compile=true vocab_multiple=64 tokenizer=gpt2 context_len=1024
        curriculum.batching=packed "$STAGES" runner.validation_interval=1000000000 runner.save_interval=1000000000)
train_at() {  # MINI_BATCH STEPS NAME [OVERRIDE]: a real training run (5 min at most) into $OUT/run_NAME, log NAME.log
  rm -rf "$OUT/run_$3"  # a new run each time: fresh=true would keep the last one's GB-sized checkpoint aside
  timeout 300 python -m lmplay.train "${COMMON[@]}" batch_size="$1" mini_batch_size="$1" max_steps="$2" \
    hydra.run.dir="$OUT/run_$3" ${4:+"$4"} > "$OUT/$3.log" 2>&1
}

summarize() {  # STATS_JSON LABEL: median tokens/s and MFU of the train records after the compiling steps
python - "$1" "$2" <<'PY'
import json, statistics, sys
train = json.load(open(sys.argv[1]))["train"][10:]  # the first steps compile
tps = statistics.median(r["tokens_per_second"] for r in train)
mfu = [r["mfu"] for r in train if "mfu" in r]
print(f"{sys.argv[2]}: median {tps:,.0f} tokens/s"
      + (f", MFU {statistics.median(mfu):.1%}" if mfu else " (this GPU is not in the MFU table)"))
PY
}

if [ "${INDUCTOR_OPTIONS:-}" = only ]; then  # part 6 alone, at the first mini-batch given (a second call
  [ $# -gt 0 ] || { echo "INDUCTOR_OPTIONS=only needs the mini-batch: bash benchmarks/gpu.sh 128"; exit 1; }
  fits=${1%% *}                              # on a device whose calls are time-limited)
else
  if want tests; then
    python -m pytest -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -3 | tee "$OUT/tests.log" || failed=1
  fi

  fits=""
  for mb in "${@:-256 128 64 32}"; do
    for m in $mb; do
      if train_at "$m" "$STEPS" "mb$m"; then fits=$m; break 2; fi
      echo "mini_batch_size=$m did not run (see $OUT/mb$m.log): $(grep -m1 -iE 'out of memory|error' "$OUT/mb$m.log")"
    done
  done
  [ -n "$fits" ] || { echo "no mini-batch size fitted"; exit 1; }
  summarize "$OUT/run_mb$fits/stats.json" "$EXP mini-batch $fits" | tee "$OUT/row.log"
  if train_at "$fits" "$STEPS" pytorch_loss fused_loss=false; then
    summarize "$OUT/run_pytorch_loss/stats.json" "$EXP mini-batch $fits, fused_loss=false" | tee -a "$OUT/row.log"
  else
    echo "fused_loss=false did not run (see $OUT/pytorch_loss.log)" | tee -a "$OUT/row.log"; failed=1
  fi
  BENCH=(--exp "$EXP" --device cuda --amp --compile --tokenizer gpt2 --context-len 1024 --batch-size "$fits"
         --mini-batch-size "$fits" vocab_multiple=64 curriculum.batching=packed "$STAGES")
  if want loop; then
    python benchmarks/train_loop.py "${BENCH[@]}" --steps 20 --chunk 10 2>&1 | tail -3 | tee "$OUT/train_loop.log" || failed=1
    python benchmarks/train_loop.py "${BENCH[@]}" fused_loss=false --steps 20 --chunk 10 2>&1 | tail -3 \
      | tee -a "$OUT/train_loop.log" || failed=1
  fi
  if want profile; then
    python benchmarks/profile_step.py "${BENCH[@]}" --steps 5 2>&1 | grep -vE "USDT|UserWarning|_warn_once" | tail -22 | tee "$OUT/profile.log" || failed=1
    python benchmarks/profile_step.py --bare "${BENCH[@]}" --steps 5 2>&1 | grep -vE "USDT|UserWarning|_warn_once" | tail -22 | tee -a "$OUT/profile.log" || failed=1
  fi
  if want kernels; then
    python benchmarks/loss_kernels.py --device cuda --rows 65536 2>&1 | tail -8 | tee "$OUT/loss_kernels.log" || failed=1
    python benchmarks/loss_kernels.py --device cuda --rows 65536 --variants mask full mask_lse \
      --option coordinate_descent_tuning=true 2>&1 | tail -4 | tee -a "$OUT/loss_kernels.log" || failed=1
    python benchmarks/loss_kernels.py --device cuda --rows 65536 --backward-configs 1024x4 2048x4 2048x8 4096x4 \
      8192x8 8192x16 16384x16 2>&1 | tail -8 | tee -a "$OUT/loss_kernels.log" || failed=1
  fi
fi
[ -n "${INDUCTOR_OPTIONS:-}" ] || exit "$failed"
export TORCH_LOGS=perf_hints  # where inductor skips CUDA graphs, it says why only as a perf hint
for name in ${OPTIONS:-coordinate_descent_tuning max_autotune_pointwise triton.cudagraphs}; do
  option="compile_options={$name: true}"
  if train_at "$fits" 40 "$name" "$option"; then
    summarize "$OUT/run_$name/stats.json" "$EXP mini-batch $fits, $option" | tee -a "$OUT/row.log"
    grep -m1 -i "skipping cudagraphs" "$OUT/$name.log" | tee -a "$OUT/row.log"  # inductor fell back without them
  else
    echo "$option failed (see $OUT/$name.log): $(grep -m1 -iE 'error' "$OUT/$name.log")" | tee -a "$OUT/row.log"
    failed=1
  fi
done
exit "$failed"
