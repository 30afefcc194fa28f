"""Training throughput of the LLM-track learners on SmolLM2-135M-Instruct, each against a
baseline measured in the same process (machines here are noisy; ratios are what we compare).

- SFT step: completion-only next-token loss on a batch of gold traces; full fine-tuning (the
  baseline) against training only the top `--layers` blocks (the study's `train_layers`).
- Verifier step: the per-prefix log loss of `learn/verifier.py` with the top 4 blocks trained,
  against the SFT full fine-tuning step on the same rows (what training the whole body costs).
- RL step: `learn/rl.py: accumulate_gradient` (policy and reference forwards, exact KL over the
  vocabulary, micro-batches of 4) on sampled traces, against one plain full fine-tuning
  forward/backward of the same rows.
- Budget forcing: `forced_sample` at H against plain `sample` at H on the same prompts (the
  cost of its rounds: re-prefill of the prompt plus the trace so far).
Rates are tokens in the batch (prompt + completion, what the forward pass reads) per second,
median of `--repeats` steps after one warm-up step; ratios are rate over the baseline's rate
(time ratios for the two rows that share their baseline's exact batch).

Run: `python benchmarks/llm_learners.py --threads 1` (about 4 minutes on 2 cores); prints a
Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from veriscale.learn.data import lm_rows
from veriscale.learn.loop import LogitsOf, make_optimizer, masked_ce
from veriscale.learn.rl import RLConfig, accumulate_gradient
from veriscale.learn.verifier import Verifier, labelled, verifier_loss
from veriscale.policy.forcing import BudgetForcing
from veriscale.policy.load import load_policy
from veriscale.policy.smollm2 import ensure_converted
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import NEVER, id_rollouts
from veriscale.tasks.gym import GymConfig, GymTask


def timed(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def completion_rows(prompt_ids: list[list[int]], completions: list[list[int]],
                    pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`lm_rows` of prompt + completion rows, cut to the longest prompt + completion: columns
    past it are padding in every row (lm_rows lays rows out as longest prompt + longest
    completion), so the batch is the same tensor these measurements have always used."""
    x, y, m = lm_rows(prompt_ids, id_rollouts(completions, max(map(len, completions)), pad_id), pad_id)
    w = int(m.any(0).nonzero().max()) + 1
    return x[:, :w], y[:, :w], m[:, :w]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--H", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = f"hf:{ensure_converted()}"
    task = GymTask(GymConfig(grade_workers=1))
    problems = task.prompts("train", args.batch, 0)
    rows = []

    def load():  # a fresh SmolLM2 policy (HFPolicy), so every measurement starts from the base weights
        return load_policy(spec, hf=HFConfig(progress=False))

    def sft_step_fn(train_layers: int):
        s = load()
        s.train_top(train_layers)
        comp = [s.encode_completion(p.solution) for p in problems]  # gold solution + EOS
        x, y, m = completion_rows(s.encode_prompts(problems), comp, s.pad_id)
        net, opt = LogitsOf(s), make_optimizer(s.model, 1e-5, 0.0)
        s.model.train()

        def step():
            opt.zero_grad(set_to_none=True)
            masked_ce(net(x), y, m).backward()
            opt.step()
        return step, x.numel(), s

    full, tokens, s = sft_step_fn(0)
    t_full = timed(full, args.repeats)
    rows.append(("SFT step, full fine-tuning (baseline)", tokens / t_full, 1.0))
    top, _, _ = sft_step_fn(args.layers)
    t_top = timed(top, args.repeats)
    rows.append((f"SFT step, top {args.layers} of 30 blocks", tokens / t_top, t_full / t_top))

    ro = s.sample(problems, args.H, temperature=0.7, seed=0)
    T = task.check(problems, ro)
    T = torch.where(T <= args.H, T, torch.full_like(T, NEVER))  # first success within H, else NEVER
    traces = [ro.tokens[i, :ro.counts[i]].tolist() for i in range(len(problems))]
    vp = load()
    v = Verifier(vp)
    vp.train_top(4)
    batch = labelled(v, problems, id_rollouts(traces, max(1, int(ro.counts.max())), vp.pad_id), T)
    # Cut the rows to the longest prompt + trace, as above: no prefix reads past it.
    batch["seq"] = batch["seq"][:, :int(batch["pos"].max()) + 1]
    vopt = make_optimizer(v, 1e-4, 0.0)

    def vstep():
        vopt.zero_grad(set_to_none=True)
        logits = v(batch["seq"]).gather(1, batch["pos"])  # (N, L): the logit after each prefix h
        verifier_loss(logits, batch["labels"], batch["mask"], "log").backward()
        vopt.step()
    t_v = timed(vstep, args.repeats)
    rate_v = batch["seq"].numel() / t_v
    rows.append(("verifier step, top 4 blocks + head", rate_v, rate_v / (tokens / t_full)))

    policy = load()
    ref = LogitsOf(policy.frozen_copy())
    rl_rows = [p for p in problems for _ in range(2)]
    rro = policy.sample(rl_rows, args.H, temperature=0.7, seed=1)
    x, y, m = completion_rows(policy.encode_prompts(rl_rows),
                              [rro.tokens[k, :rro.counts[k]].tolist() for k in range(len(rl_rows))], policy.pad_id)
    adv = torch.randn(len(rl_rows))
    net = LogitsOf(policy)
    policy.model.train()
    # The text track's RL settings of the time: GRPO's std normalisation, KL weight 0.04, micro-batches of 4.
    cfg = RLConfig(horizon=args.H, adv_norm="std", beta=0.04, micro_batch=4)
    t_rl = timed(lambda: accumulate_gradient(net, ref, x, y, m, adv, cfg), args.repeats)
    plain = timed(lambda: masked_ce(net(x), y, m).backward(), args.repeats)
    rows.append((f"RL step ({len(rl_rows)} traces), full fine-tuning, vs one plain forward/backward",
                 x.numel() / t_rl, plain / t_rl))

    prompts = task.prompts("test", 16, 0)
    t_plain = timed(lambda: s.sample(prompts, args.H, temperature=0.7, seed=2), 1)
    t_forced = timed(lambda: s.sample(prompts, args.H, temperature=0.7, seed=2,
                                      forcing=BudgetForcing(answer_tokens=6)), 1)
    rows.append((f"budget-forced sampling at H={args.H} (16 prompts), vs plain sampling", float("nan"),
                 t_plain / t_forced))

    print(f"| measurement (SmolLM2-135M, {args.threads} thread(s), batch {args.batch}) | tokens/s | "
          "ratio to baseline |")
    print("|---|---|---|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:.0f} | {ratio:.2f}x |" if rate == rate else f"| {name} | — | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
