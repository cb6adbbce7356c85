"""lmplay's Triton loss kernels (lmplay/kernels/cross_entropy.py) against PyTorch's loss, run by Triton's
interpreter on a CPU. Where Triton is not installed (CPU builds of torch, as CI's) they are skipped: `pip install
triton` runs them on a CPU. A GPU build brings Triton, and tests/test_gpu.py runs the kernels compiled through a
model on the GPU."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import python_path

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs Triton (a GPU build of torch)")

# In a process of its own: TRITON_INTERPRET must be set before Triton is imported, and dynamo and autograd's
# state stay out of this one. It prints what the kernels give and what PyTorch gives, for each case.
CASES = r"""
import json
import torch
import torch.nn.functional as F
from lmplay.kernels.cross_entropy import cross_entropy
from lmplay.loss import mask_padding, top1_correct

def reference(logits, targets, vocab, ties):
    masked = mask_padding(logits.float(), vocab)
    return F.cross_entropy(masked, targets, ignore_index=-100, reduction="sum"), top1_correct(masked, targets, ties)

torch.manual_seed(0)
rows, vocab, padded = 40, 9000, 9024  # 3 blocks of 4096, the last one partly padding
out = {}
for dtype, ties in ((torch.bfloat16, True), (torch.float32, False)):
    x = (torch.randn(rows, padded) * 3).to(dtype)
    targets = torch.randint(0, vocab, (rows,))
    x[1, 5000] = x[1, 8990] = x[1].max() + 4   # a tie: the first index is the argmax
    targets[1] = 5000
    x[2, 100] = x[2, 4200] = x[2].max() + 4    # a tie in other blocks: the target is the second index
    targets[2] = 4200
    x[3, vocab + 5] = 1000.0                    # a padding column that would be every max and the loss
    targets[4:6] = -100                         # ignored rows
    x[6, 7] = x[6].max() + 2
    targets[6] = 7                              # a plain hit
    x[7, :4096] = float("-inf")                 # a first block with nothing in it (a model that masks logits)
    x[8] = x[8] * 1000                          # large logits, where lse - target would round away the loss
    got, want = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, hits = cross_entropy(got, targets, vocab, ties)
    (loss * 0.25).backward()                    # a scaled loss: the runner divides by the batch's tokens
    ref_loss, ref_hits = reference(want, targets, vocab, ties)
    (ref_loss * 0.25).backward()
    row_hits = [[int(f(x[i:i + 1], targets[i:i + 1], vocab, ties)[1]) for i in range(rows)]
                for f in (cross_entropy, reference)]
    unchanged = torch.equal(got.detach(), x)  # eager, the gradient never goes over the logits
    out[str(dtype)] = {"loss": [loss.item(), ref_loss.item()], "hits": [int(hits), int(ref_hits)], "row_hits": row_hits,
                       "grad_error": (got.grad.float() - want.grad.float()).abs().max().item(),
                       "grad_dtype": str(got.grad.dtype), "padding_grad": got.grad[:, vocab:].abs().max().item(),
                       "ignored_grad": got.grad[4:6].abs().max().item(), "unchanged": unchanged}
for name, view in (("strided", lambda t: t[:, ::2]), ("sliced", lambda t: t[:, :padded])):  # not contiguous
    whole = torch.randn(8, 2 * padded, requires_grad=True)
    loss = cross_entropy(view(whole), torch.arange(8), vocab, False)[0]
    loss.backward()
    got_grad, whole.grad = whole.grad, None
    ref_loss = reference(view(whole), torch.arange(8), vocab, False)[0]
    ref_loss.backward()
    out[name] = [loss.item(), ref_loss.item(), (got_grad - whole.grad).abs().max().item()]
empty = cross_entropy(torch.zeros(0, padded, requires_grad=True), torch.zeros(0, dtype=torch.long), vocab, True)
out["empty"] = [empty[0].item(), int(empty[1])]
out["out_of_range"] = []  # never a read past the row, nor a finite loss, nor a gradient on the padding
for t in (vocab + 3, padded + 7, -5):
    row = torch.randn(1, padded, requires_grad=True)
    loss = cross_entropy(row, torch.tensor([t]), vocab, False)[0]
    loss.backward()
    out["out_of_range"].append([loss.item(), row.grad[0, vocab:].abs().max().item()])
offset = (1e6 + torch.randn(4, padded)).requires_grad_()  # logits near 1e6: lse - target would round the loss
out["offset"] = [[cross_entropy(offset[i:i + 1], targets[i:i + 1], vocab, False)[0].item(),
                  reference(offset[i:i + 1], targets[i:i + 1], vocab, False)[0].item()] for i in range(4)]

weight = torch.randn(padded, 16, requires_grad=True)  # compiled: the kernels inside an inductor graph, with autograd
def step(h, targets):
    return cross_entropy(h @ weight.t(), targets, vocab, False, overwrite=True)
h, targets = torch.randn(rows, 16), torch.randint(0, vocab, (rows,))
compiled_loss, _ = torch.compile(step)(h, targets)
compiled_loss.backward()
compiled_grad, weight.grad = weight.grad, None
eager_loss, _ = reference(h @ weight.t(), targets, vocab, False)
eager_loss.backward()
out["compiled"] = [compiled_loss.item(), eager_loss.item(), (compiled_grad - weight.grad).abs().max().item()]
kept = torch.randn(rows, padded, requires_grad=True)  # compiled, a graph whose logits the caller gets back:
def kept_logits(x, targets):                             # inductor must not write their gradient over them
    logits = x * 2
    return cross_entropy(logits, targets, vocab, False, overwrite=True)[0], logits
try:
    compiled_loss, returned = torch.compile(kept_logits)(kept, targets)
    compiled_loss.backward()
    out["kept"] = (returned - kept.detach() * 2).abs().max().item()
except torch._dynamo.exc.TorchDynamoException as e:  # what the runner falls back to eager on, saying so
    out["kept"] = type(e).__name__
given = torch.randn(rows, padded, requires_grad=True)  # compiled without overwrite, logits from outside the graph
before = given.detach().clone()
torch.compile(lambda x, t: cross_entropy(x, t, vocab, False)[0])(given, targets).backward()
out["given"] = (given.detach() - before).abs().max().item()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # inductor's cache of its own: a graph cached before a change to the kernels' autograd would call the old ops
    env = {**os.environ, "PYTHONPATH": python_path(), "TRITON_INTERPRET": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path_factory.mktemp("inductor"))}
    proc = subprocess.run([sys.executable, "-c", CASES], check=False, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["torch.bfloat16", "torch.float32"])
def test_the_kernels_give_pytorchs_loss_gradient_and_hits(results, dtype):
    case = results[dtype]
    assert case["loss"][0] == pytest.approx(case["loss"][1], rel=1e-5)
    # rows 1 and 6; bf16's ties go to argmax's first index (row 2's target is the second), fp32's count (row 2 too)
    assert case["hits"][0] == case["hits"][1] == (2 if dtype == "torch.bfloat16" else 3)
    assert case["row_hits"][0] == case["row_hits"][1]
    assert case["grad_dtype"] == dtype  # the gradient in the logits' own dtype, never an fp32 copy
    assert case["grad_error"] <= (2 ** -9 if dtype == "torch.bfloat16" else 1e-6)  # bf16: half an ulp at 0.25
    assert case["padding_grad"] == 0 and case["ignored_grad"] == 0 and case["unchanged"]


def test_a_target_outside_the_vocabulary_is_an_infinite_loss(results):
    """PyTorch raises (CPU) or asserts on the device (CUDA); a kernel reading past its row would give a number."""
    assert results["out_of_range"] == [[float("inf"), 0.0]] * 3


def test_large_logits_keep_their_loss(results):
    """Logits near 1e6 (fp32's step there is 0.06): the loss is (max - target) + log(sum), each term exact."""
    for loss, expected in results["offset"]:
        assert loss == pytest.approx(expected, rel=1e-4)


def test_the_backward_that_writes_over_its_input_is_never_autotuned():
    """Tuning reruns a kernel on the same arguments: an in-place backward then computed the first step's gradient
    from a gradient (every run's first compiled step; Triton's interpreter, with one config, never tunes)."""
    from triton.runtime import Autotuner

    from lmplay.kernels import cross_entropy

    assert isinstance(cross_entropy._cross_entropy_forward_kernel, Autotuner)  # reads only: tuned
    assert not isinstance(cross_entropy._cross_entropy_backward_kernel, Autotuner)


def test_strided_and_empty_logits_and_a_compiled_graph(results):
    for name in ("strided", "sliced"):
        loss, expected, grad_error = results[name]
        assert loss == pytest.approx(expected, rel=1e-5) and grad_error < 1e-6
    assert results["empty"] == [0.0, 0]
    loss, eager, grad_error = results["compiled"]
    assert loss == pytest.approx(eager, rel=1e-5) and grad_error < 1e-5


def test_compiled_the_gradient_is_never_written_over_logits_the_caller_holds(results):
    """Compiled, the backward writes the gradient over the logits (one buffer, not two) only where nothing else
    can read them: logits a graph returns keep their values, or (torch 2.13) the graph does not compile, and the
    runner trains on eagerly, saying so; never are the gradients read as logits."""
    assert results["kept"] in (0, "BackendCompilerFailed")
    assert results["given"] == 0  # without overwrite (the default), logits a caller passed in are never written
