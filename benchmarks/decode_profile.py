"""Where one decode step of SmolLM2-135M-Instruct spends its time on this CPU, against the
matmul-only time of the same shapes measured in the same process (the roofline of the step).

For each row count b and decoding dtype, a KV cache of `--context` tokens per row is built
(random token ids: the shapes, not the text, set the cost), then `--steps` decode steps run as
`HFSampler` runs them: one token per row through the model with the cache, then one token drawn
from the (b, V) logits by the sampler's rule (`engine.sample_next`). With `--padding both`, each
is measured twice: every row full (no attention mask reaches the attention), and half the rows
left-padded over a third of the context, as a draw's rows of prompts of different lengths are
(the attention gets a mask; for grouped-query attention with a mask, transformers' SDPA path
packs the query heads onto the key/value heads, without one it asks SDPA for `enable_gqa`).
Measured:

- step: wall time of one decode step (forward + sampling), the mean over the steps;
- the step's CPU time by operator class, from torch.profiler (self time of each aten op):
  matmul (the linear layers' mm/addmm/linear), attention and cache update (scaled_dot_product_attention
  and its parts; bmm attention's batched matmuls, mask and softmax over (b, heads, g, S) scores;
  cat/copy of keys and values, rotary embedding arithmetic), sampling (softmax, cumsum,
  searchsorted, rand over the (b, V) vocabulary), other ops (norms, activations, indexing);
  "python + dispatch" is the wall time no operator accounts for (the profiler's own cost is in
  it too, so the profiled wall is shown beside the plain one);
- matmul only: the step's linear layers alone, x @ W^T with the model's own weights at b rows
  (30 blocks of q, k, v, o, gate, up, down, then the 49k-row head), timed alternately with the
  step, so both see the same machine load. Its tokens/s (b / time) is the roofline a sampler
  could reach if nothing but the matmuls took time; "step / matmul" is the share reached.

Each step is measured with transformers' concatenating `DynamicCache` (before) and with the
sampler's growing cache (policy/kv_cache.py, after), and with each decode attention of
`--attentions` (`hf.decode_attention`: sdpa, the model's own, or bmm, policy/decode_attention.py),
in turn in the same process.

Run: `python benchmarks/decode_profile.py --threads 2 [--rows 64,256 --dtypes float32,bfloat16
--context 160 --steps 16 --caches concatenating,growing --attentions sdpa,bmm --padding both]`; prints
Markdown.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from veriscale.policy.engine import sample_next
from transformers import DynamicCache

from veriscale.policy import decode_attention
from veriscale.policy.hf_sampler import HFSampler, attending
from veriscale.policy.kv_cache import growing_cache
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig

from veriscale.bench import cpu_flags, cpu_model

CLASSES = {  # aten op name fragment -> class; the first match wins (4-D softmax inputs are attention's)
    "matmul": ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul"),
    "attention + cache": ("scaled_dot_product", "attention", "aten::bmm", "aten::masked_fill", "aten::cat",
                          "aten::copy_", "aten::index_select", "aten::neg"),
    "sampling": ("aten::softmax", "aten::_softmax", "aten::cumsum", "aten::searchsorted", "aten::uniform_",
                 "aten::rand", "aten::div"),
}


def op_class(name: str, shapes: list) -> str:
    if "softmax" in name and shapes and len(shapes[0]) == 4:  # over (b, heads, g, S) scores, not (b, V) logits
        return "attention + cache"
    return next((c for c, keys in CLASSES.items() if any(k in name for k in keys)), "other ops")


def linears(net) -> list[torch.Tensor]:
    """The weights of every matmul of one decode step, in order: per block q, k, v, o, gate, up,
    down, then the output head (tied to the embedding in SmolLM2)."""
    out = []
    for block in net.model.layers:
        a, m = block.self_attn, block.mlp
        out += [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight, m.gate_proj.weight,
                m.up_proj.weight, m.down_proj.weight]
    return out + [net.lm_head.weight]


@torch.inference_mode()
def matmul_only(weights: list[torch.Tensor], b: int, steps: int) -> float:
    """Seconds per step of the step's matmuls alone at b rows (inputs of the right width)."""
    xs = {w.shape[1]: torch.randn(b, w.shape[1], dtype=w.dtype) for w in weights}
    start = time.perf_counter()
    for _ in range(steps):
        for w in weights:
            torch.nn.functional.linear(xs[w.shape[1]], w)
    return (time.perf_counter() - start) / steps


def roofline_rate(net, b: int) -> float:
    """Matmul-only tokens/s of `net`'s decode step at b rows: the best of 3 x 8 steps (the measure the
    samplers' share of the roofline is taken against in sampler_speed.py and draw_parts.py)."""
    return b / min(matmul_only(linears(net), b, 8) for _ in range(3))


CACHES = {"concatenating": lambda config, whole: DynamicCache(config=config),  # transformers' own: torch.cat per step
          "growing": growing_cache}  # the sampler's (policy/kv_cache.py): written in place; whole buffers for bmm


def context_mask(b: int, context: int, padding: str) -> torch.Tensor:
    """(b, context) 1 at real tokens: every row full ("none"), or the first half of the rows
    left-padded over a third of the context ("half")."""
    attn = torch.ones(b, context, dtype=torch.long)
    if padding == "half":
        attn[: b // 2, : context // 3] = 0
    return attn


@torch.inference_mode()
def prefill(net, b: int, context: int, padding: str = "none"):
    """A (concatenating) cache of b rows of `context` random tokens (left-padded as `padding`
    says), their last logits' draw."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(net.config.vocab_size, (b, context), generator=g)
    attn = context_mask(b, context, padding)
    cache = DynamicCache(config=net.config)
    out = net(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0), cache=cache,
              use_cache=True, logits_to_keep=1)
    return cache, out.logits[:, -1].argmax(-1)


def copy_as(prefilled, kind: str, config, whole: bool):
    """A fresh cache of `kind` holding a copy of the prefilled keys and values (each measurement
    starts from the same context without prefilling again)."""
    cache = CACHES[kind](config, whole)
    for lay, src in zip(cache.layers, prefilled.layers):
        lay.lazy_initialization(src.keys, src.values)
        lay.keys, lay.values = src.keys.clone(), src.values.clone()
    return cache


@torch.inference_mode()
def decode_steps(net, prefilled, first: torch.Tensor, steps: int, cfg: HFConfig, prof: bool,
                 cache_kind: str = "growing", padding: str = "none", attention: str = "sdpa") -> tuple[float, dict]:
    """Seconds per decode step of the prefilled rows, and (prof) the CPU time per step by
    operator class."""
    g = torch.Generator().manual_seed(0)
    cache = copy_as(prefilled, cache_kind, net.config, attention == "bmm")
    b, context = len(first), prefilled.get_seq_length()
    attn = context_mask(b, context, padding)
    nxt, pos = first, attn.sum(1)

    def step():
        nonlocal attn, nxt, pos
        attn = torch.cat([attn, torch.ones(b, 1, dtype=attn.dtype)], 1)
        o = net(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos[:, None], cache=cache, use_cache=True)
        pos = pos + 1
        nxt = sample_next(o.logits[:, -1].float(), 0.7, 0, g, cfg.draw)

    if not prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps, {}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps
    by = defaultdict(float)
    for e in p.key_averages(group_by_input_shape=True):
        by[op_class(e.key, e.input_shapes)] += e.self_cpu_time_total / 1e6 / steps
    return wall, dict(by)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="64,256")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--context", type=int, default=160, help="cached tokens per row (prompt + generated so far)")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--caches", default="concatenating,growing", help=f"KV caches to compare: {', '.join(CACHES)}")
    ap.add_argument("--attentions", default="sdpa,bmm", help="decode attentions to compare (hf.decode_attention)")
    ap.add_argument("--padding", default="none", choices=["none", "half", "both"], help="left padding (see the docstring)")
    ap.add_argument("--rounds", type=int, default=2, help="step and matmul-only timings alternate; best of rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf = load_policy("smollm2", hf=HFConfig(progress=False)).sampler
    print(f"SmolLM2-135M-Instruct, {cpu_model()} ({cpu_flags()}), {args.threads} thread(s), torch {torch.__version__}; "
          f"cache of {args.context} tokens per row, {args.steps} decode steps, sampling rule {hf.cfg.draw!r}, "
          f"best of {args.rounds} alternating rounds; load average before {os.getloadavg()[0]:.1f}\n")
    print("| dtype | rows | padding | KV cache | attention | step ms | matmul-only ms | step tok/s | roofline tok/s | step / roofline | "
          "matmul ms | attention + cache ms | sampling ms | other ops ms | python + dispatch ms | profiled step ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    caches = [(c, a) for c in args.caches.split(",") for a in args.attentions.split(",")]
    paddings = ["none", "half"] if args.padding == "both" else [args.padding]
    for dtype in args.dtypes.split(","):
        net = HFSampler(hf.model, hf.tok, replace(hf.cfg, sample_dtype=dtype)).decoder()
        weights = linears(net)
        for b, pad in ((int(r), p) for r in args.rows.split(",") for p in paddings):
            step_s, mm_s = {c: float("inf") for c in caches}, float("inf")
            prefilled, first = prefill(net, b, args.context, pad)
            for _ in range(args.rounds):  # every cache and the matmuls in turn, so load hits all alike
                for c, a in caches:
                    with attending(net, decode_attention.implementation(a)):
                        step_s[c, a] = min(step_s[c, a], decode_steps(net, prefilled, first, args.steps, hf.cfg, False,
                                                                      c, pad, a)[0])
                mm_s = min(mm_s, matmul_only(weights, b, args.steps))
            for c, a in caches:
                with attending(net, decode_attention.implementation(a)):
                    wall, by = decode_steps(net, prefilled, first, args.steps, hf.cfg, True, c, pad, a)
                ops = sum(by.values())
                parts = [by.get(k, 0.0) for k in ("matmul", "attention + cache", "sampling", "other ops")]
                t = step_s[c, a]
                print(f"| {dtype} | {b} | {pad} | {c} | {a} | {1e3 * t:.1f} | {1e3 * mm_s:.1f} | {b / t:,.0f} | "
                      f"{b / mm_s:,.0f} | {mm_s / t:.0%} | " + " | ".join(f"{1e3 * x:.1f}" for x in parts) +
                      f" | {1e3 * max(wall - ops, 0.0):.1f} | {1e3 * wall:.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
