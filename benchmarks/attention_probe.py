"""One layer's attention of one decode step, alone: torch's SDPA (as transformers calls it for one
query token with a padding mask: the query heads packed onto the key/value heads) against the two
batched matmuls of policy/decode_attention.py, on the growing cache's view of its first S
columns (strided between rows) and on a contiguous buffer; and a plain read of the same keys and
values, the memory-bound floor. SmolLM2-135M's attention shapes: 9 query heads over 3 key/value
heads of 64, bf16 or float32, half the rows left-padded over a third of S. Mean of `--repeats`
calls after one warm-up.

    python benchmarks/attention_probe.py --threads 2 --rows 256 --columns 170 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from veriscale.bench import cpu_flags, cpu_model
from veriscale.policy.decode_attention import decode_attention


def ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--columns", type=int, default=170, help="cached tokens S")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype, b, S, H, kvh, d = getattr(torch, a.dtype), a.rows, a.columns, 9, 3, 64
    g = torch.Generator().manual_seed(0)
    capacity = 2 * S  # the view's rows lie this many columns apart in its buffer
    buf_k, buf_v = (torch.randn(b, kvh, capacity, d, generator=g).to(dtype) for _ in range(2))
    view_k, view_v = buf_k[:, :, :S], buf_v[:, :, :S]
    whole_k, whole_v = view_k.contiguous(), view_v.contiguous()
    q = torch.randn(b, H, 1, d, generator=g).to(dtype)
    keep = torch.ones(b, 1, 1, S, dtype=torch.bool)
    keep[: b // 2, ..., : S // 3] = False

    class Layer:  # what the attention functions read of a transformers attention module
        num_key_value_groups, is_causal = H // kvh, True

    print(f"{cpu_model()} ({cpu_flags()}), {a.threads} thread(s), torch {torch.__version__}; {b} rows, "
          f"S = {S}, {a.dtype}; keys and values {2 * whole_k.numel() * whole_k.element_size() / 1e6:.1f} MB\n")
    print("| attention | ms a layer |\n|---|---|")
    cases = {
        "SDPA on the cache's view": lambda: sdpa_attention_forward(Layer, q, view_k, view_v, keep),
        "two bmm on the cache's view (strided)": lambda: decode_attention(Layer, q, view_k, view_v, keep),
        "two bmm on a contiguous buffer": lambda: decode_attention(Layer, q, whole_k, whole_v, keep),
        "a plain read of the keys and values (sum)": lambda: (whole_k.sum(), whole_v.sum()),
    }
    for name, fn in cases.items():
        print(f"| {name} | {ms(fn, a.repeats):.2f} |")


if __name__ == "__main__":
    main()
