"""One decode step of SmolLM2-135M-Instruct, eager against `torch.compile` (inductor, dynamic
shapes), at the shapes of benchmarks/decode_profile.py: `--rows` rows with a cache of `--context`
tokens, `--steps` steps of one token per row and the sampler's draw (decode_profile.decode_steps).
Prints the eager step with each KV cache, the compile time (with its first run), and the compiled
step's time against the eager step with the same cache, best of 2 runs each.

    python benchmarks/compiled_step.py --threads 2 --rows 64 --context 160 --steps 16 --caches concatenating
"""

from __future__ import annotations

import argparse
import time

import torch

from decode_profile import decode_steps, prefill
from veriscale.bench import cpu_flags, cpu_model
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--context", type=int, default=160)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--caches", default="concatenating", help="KV caches to compile with: concatenating, growing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf = load_policy("smollm2", hf=HFConfig(progress=False)).sampler
    net = hf.decoder()
    pre, first = prefill(net, args.rows, args.context)
    caches = args.caches.split(",")
    print(f"SmolLM2-135M-Instruct, {cpu_model()} ({cpu_flags()}), {args.threads} thread(s), torch {torch.__version__}; "
          f"{args.rows} rows, cache of {args.context} tokens, {args.steps} steps\n", flush=True)
    eager = {c: min(decode_steps(net, pre, first, args.steps, hf.cfg, False, c)[0] for _ in range(2)) for c in caches}
    compiled = torch.compile(net, dynamic=True)
    for c in caches:
        start = time.perf_counter()
        decode_steps(compiled, pre, first, args.steps, hf.cfg, False, c)
        first_run = time.perf_counter() - start
        best = min(decode_steps(compiled, pre, first, args.steps, hf.cfg, False, c)[0] for _ in range(2))
        print(f"| {c} cache | eager {1e3 * eager[c]:.1f} ms a step | compile + first run {first_run:.0f} s | "
              f"compiled {1e3 * best:.1f} ms a step | {eager[c] / best:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
