"""What cutting batches to their width buys the LLM study's learners: SmolLM2-135M-Instruct on
the study's own labelled samples (a `samples` artifact of a study directory, or drawn here),
each computation timed both ways in one process, alternating, so a busy CPU slows both alike.

- verifier step (top 4 blocks + value head on frozen-trunk features, 8 random traces): rows
  padded to the whole training set's width (before) against rows cut to the batch's last prefix
  (`verifier.prefix_logits`, now);
- verifier held-out evaluation (every validation trace, chunks of 16): chunks in file order at
  the set's width (before) against chunks in order of length, each cut (`heldout_metrics`, now);
- SFT step (top 8 blocks, 8 search-style traces: prompt + the sampled trace): logits at every
  position (before) against the head only at the loss positions (`LogitsOf.nll`, now);
- SFT held-out NLL (every trace, chunks of 8): uncut chunks of full logits (before) against
  `eval_nll` (sorted, cut, head at loss positions; now).
Both ways compute the same numbers; the script checks they agree before it times them.

Run: `python benchmarks/learner_batches.py --samples runs/llm/artifacts/samples-* --threads 1`
(or without --samples: draws 32 prompts x 4 at H = 256 first); prints Markdown.
"""

from __future__ import annotations

import argparse
import time

import torch

from veriscale.learn import samples as samples_
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import LogitsOf, eval_nll, features, make_optimizer, masked_ce, width
from veriscale.learn.verifier import (Verifier, heldout_metrics, labelled, prefix_logits, prefix_metrics,
                                      verifier_loss)
from veriscale.policy.load import load_policy
from veriscale.policy.smollm2 import ensure_converted
from veriscale.policy.text import HFConfig
from veriscale.tasks.gym import GymConfig, GymTask


def race(before, now, repeats: int) -> tuple[float, float]:
    """Median seconds of `before()` and `now()`, alternating, after one warm-up call of each."""
    before(), now()
    tb, tn = [], []
    for _ in range(repeats):
        for fn, ts in ((before, tb), (now, tn)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return sorted(tb)[len(tb) // 2], sorted(tn)[len(tn) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", default="", help="a study's samples artifact directory (default: draw them)")
    ap.add_argument("--max-digits", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = GymTask(GymConfig(max_digits=args.max_digits, grade_workers=1))
    policy = load_policy(f"hf:{ensure_converted()}", hf=HFConfig(progress=False))
    if args.samples:
        s = samples_.read(args.samples, task, policy)
    else:
        s = samples_.draw(policy, task, samples_.SamplesConfig(r=4, temperature=0.7, val_prompts=32), 32, 256, 0, 0)
    counts = s.rollouts.counts.float()
    g = torch.Generator().manual_seed(args.seed)
    rows = []

    # Verifier: top 4 blocks on the frozen trunk's features, as learn/verifier.py trains it.
    verifier = Verifier(policy)
    policy.train_top(4)
    train = labelled(verifier, s.repeated("train"), s.rollouts, s.T)
    held = labelled(verifier, s.repeated("val"), s.val_rollouts, s.val_T)
    verifier.top = policy.top_blocks()
    for d in (train, held):
        d["seq"] = features(verifier.top, d["seq"], 16)
    opt = make_optimizer(verifier, 1e-4, 0.0)
    idx = torch.randperm(len(train["seq"]), generator=g)[:8]

    def vstep(cut: bool):
        seq, pos = train["seq"][idx], train["pos"][idx]
        logits = prefix_logits(verifier, seq, pos) if cut else verifier(seq).gather(1, pos)
        opt.zero_grad(set_to_none=True)
        verifier_loss(logits, train["labels"][idx], train["mask"][idx], "log").backward()
        opt.step()

    def vheld_before():
        with torch.no_grad():
            logits = torch.cat([verifier(held["seq"][i:i + 16]).gather(1, held["pos"][i:i + 16])
                                for i in range(0, len(held["seq"]), 16)])
        return prefix_metrics(logits, held["labels"], held["mask"], "log")

    a, b = vheld_before(), heldout_metrics(verifier, held, "log", 16)
    assert abs(a["heldout_loss"] - b["heldout_loss"]) < 1e-4, (a, b)
    width_all = int(train["pos"].max()) + 1
    t0, t1 = race(lambda: vstep(False), lambda: vstep(True), args.repeats)
    rows.append((f"verifier step, 8 traces (width {width_all} -> {int(train['pos'][idx].max()) + 1})", t0, t1))
    t0, t1 = race(vheld_before, lambda: heldout_metrics(verifier, held, "log", 16), max(1, args.repeats // 2))
    rows.append((f"verifier held-out evaluation, {len(held['seq'])} traces", t0, t1))

    # SFT: a fresh policy, top 8 blocks, prompt + sampled trace rows (what search-trace SFT reads).
    policy = load_policy(f"hf:{ensure_converted()}", hf=HFConfig(progress=False))
    policy.train_top(8)
    net = LogitsOf(policy, policy.top_blocks())
    x, y, m = lm_rows(policy.encode_prompts(s.repeated("val")), s.val_rollouts, policy.pad_id)
    x = net.inputs(x, 16)
    opt = make_optimizer(policy.model, 3e-5, 0.0)
    idx = torch.randperm(len(x), generator=g)[:8]
    w = width(m[idx])

    def sft_step(cut: bool):
        xb, yb, mb = x[idx, :w], y[idx, :w], m[idx, :w]
        if cut:
            nll, count = net.nll(xb, yb, mb)
            loss = nll / count
        else:
            loss = masked_ce(net(xb), yb, mb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def nll_before():
        with torch.no_grad():
            total = sum((masked_ce(net(x[i:i + 8]), y[i:i + 8], m[i:i + 8]) * m[i:i + 8].sum()).item()
                        for i in range(0, len(x), 8))
        return total / m.sum().item()

    assert abs(nll_before() - eval_nll(net, x, y, m, 8)) < 1e-4
    t0, t1 = race(lambda: sft_step(False), lambda: sft_step(True), args.repeats)
    rows.append((f"SFT step, 8 traces ({int(m[idx].sum())} loss tokens of {8 * w} positions)", t0, t1))
    t0, t1 = race(nll_before, lambda: eval_nll(net, x, y, m, 8), max(1, args.repeats // 2))
    rows.append((f"SFT held-out NLL, {len(x)} traces", t0, t1))

    print(f"traces: {len(counts)} training, mean length {counts.mean():.1f} tokens, "
          f"{(counts >= counts.max()).float().mean():.3f} at the cap; {args.threads} thread(s)\n")
    print("| computation | before (s) | now (s) | speed-up |")
    print("|---|---|---|---|")
    for name, before, now in rows:
        print(f"| {name} | {before:.3f} | {now:.3f} | {before / now:.2f}x |")


if __name__ == "__main__":
    main()
