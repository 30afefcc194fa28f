"""Peak memory and time of one RL gradient step of SmolLM2-135M-Instruct (`accumulate_gradient`,
learn/rl.py) with the output head and loss computed all at once (`head_budget = 0`: a table of
tokens x vocabulary per micro-batch, several times over in the loss) and in checkpointed chunks
of K states (`head_budget = K x vocabulary`).

Each setting runs in its own process (a fresh peak): the model is loaded, the top `--train-layers`
blocks train (the studies' setting; the frozen trunk's features are computed first, as RL does),
`--rows` random completions of `--tokens` tokens each with random advantages form one micro-batch,
and one gradient is accumulated. Reported: the peak resident memory of the step above the
process's resident memory before it (ru_maxrss, Linux), the step's seconds, and that the loss
is the same.

Run: `python benchmarks/rl_memory.py [--rows 16 --tokens 128 --chunks 0,512 --threads 2]`; prints
Markdown.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(rows: int, tokens: int, chunk: int, train_layers: int, threads: int) -> dict:
    import torch

    from veriscale.config import from_dict
    from veriscale.learn.data import lm_rows
    from veriscale.learn.loop import LogitsOf
    from veriscale.learn.rl import RLConfig, accumulate_gradient
    from veriscale.policy.load import load_policy
    from veriscale.policy.text import HFConfig
    from veriscale.tasks.base import id_rollouts

    torch.set_num_threads(threads)
    policy = load_policy("smollm2", hf=HFConfig(progress=False))
    ref = policy.frozen_copy()
    policy.train_top(train_layers)
    top = policy.top_blocks()  # as train_rl builds them
    net, ref_net = LogitsOf(policy, top), LogitsOf(ref, ref.top_blocks(top.frozen))
    g = torch.Generator().manual_seed(0)
    V = policy.model.config.vocab_size
    prompts = [torch.randint(3, V, (24,), generator=g).tolist() for _ in range(rows)]
    completions = [torch.randint(3, V, (tokens,), generator=g).tolist() for _ in range(rows)]
    inputs, targets, mask = lm_rows(prompts, id_rollouts(completions, tokens, policy.pad_id), policy.pad_id)
    features = net.inputs(inputs, rows)
    adv = torch.randn(rows, generator=g)
    cfg = from_dict(RLConfig, {"micro_batch": rows, "head_budget": chunk * policy.model.config.vocab_size,
                               "beta": 0.04, "train_layers": train_layers})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    stats = accumulate_gradient(net, ref_net, inputs, targets, mask, adv, cfg, features=features)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"chunk": chunk, "peak_mib": (peak - before) / 1024, "seconds": seconds, "loss": stats["loss"],
            "states": int(mask.sum()), "vocab": V}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=16, help="traces in the micro-batch (studies/llm.toml: 16)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per trace (studies/llm.toml trains RL at H = 128)")
    ap.add_argument("--chunks", default="0,512,1365", help="states per chunk (0 = all at once; 1365: the default "
                                                           "head_budget 2^26 over SmolLM2's 49,152 tokens)")
    ap.add_argument("--train-layers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process's setting
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.rows, args.tokens, args.one, args.train_layers, args.threads)))
        return
    out = []
    for chunk in (int(c) for c in args.chunks.split(",")):
        res = subprocess.run([sys.executable, __file__, "--one", str(chunk), "--rows", str(args.rows), "--tokens",
                              str(args.tokens), "--train-layers", str(args.train_layers), "--threads",
                              str(args.threads)], capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    first = out[0]
    print(f"One RL micro-batch of SmolLM2-135M-Instruct: {args.rows} traces x {args.tokens} tokens = "
          f"{first['states']} sampled states, vocabulary {first['vocab']:,}, top {args.train_layers} blocks "
          f"training, {args.threads} thread(s)\n")
    print("| states per chunk | peak memory above start (MiB) | vs all at once | seconds | vs all at once | loss |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['chunk'] or 'all at once'} | {r['peak_mib']:,.0f} | {r['peak_mib'] / first['peak_mib']:.2f}x | "
              f"{r['seconds']:.2f} | {r['seconds'] / first['seconds']:.2f}x | {r['loss']:.6f} |")


if __name__ == "__main__":
    main()
