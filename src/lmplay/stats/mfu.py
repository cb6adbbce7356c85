"""Model FLOPs utilisation: achieved training FLOPs over the device's peak (the PaLM paper's accounting).

Per token, training costs 6N FLOPs for the N parameters used in matmuls (embedding lookups are not
matmuls; an untied output layer is), plus the attention score and value products:
12 * layers * sequence length * width (forward + backward), with the sequence length of the batch
(packed batches: the context; rows batches: their longest row).
"""

import re

import torch
from torch import nn

# Dense bf16 peaks in TFLOPS, without sparsity, from the vendors' data sheets.
PEAK_TFLOPS = {
    "B200": 2250.0,
    "MI300X": 1307.4,  # ROCm builds of torch report AMD GPUs as "cuda" devices
    "H200": 989.0,
    "H200 NVL": 835.0,  # the PCIe card, clocked as the H100 NVL
    "GH200": 989.0,  # a Grace Hopper board's H100/H200-class GPU
    "H100 SXM": 989.0,
    "H100 SXM5": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,
    "T4": 65.0,
}


def matmul_params(model: nn.Module) -> int:
    """Parameters that take part in matmuls: all but embedding tables (a table tied to an output layer counts)."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)} - linear
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def flops_per_token(num_params: int, attention_layers: int, seq_len: int, attention_width: int) -> float:
    """6N + 12 L T d: the matmuls of forward + backward for one token of a sequence of T tokens, with L attention
    layers of d = heads x head_dim (nanoGPT's and PaLM's count; for GPT-2 shapes L blocks and d embed_dim)."""
    return 6 * num_params + 12 * attention_layers * seq_len * attention_width


def peak_flops(device: torch.device) -> float | None:
    """The device's bf16 peak in FLOP/s, or None where the table does not know it (then only tokens/s is shown)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # whole words: an L40 is no L4
        if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", name, re.IGNORECASE):
            return PEAK_TFLOPS[key] * 1e12
    return None


def mfu(flops_per_second: float, peak: float | None) -> float | None:
    return None if peak is None else flops_per_second / peak
