"""Seconds per GRPO-style RL step of our learner (`learn/rl.py: train_rl`) against TRL's
`GRPOTrainer`, side by side in one process at matched settings, on SmolLM2-135M-Instruct (CPU).

What is measured: one on-policy RL step = sample 4 prompts x G = 4 completions, reward them,
one AdamW update. Per side, the median over `--steps` steps after `--warmup` discarded steps, of
- step: the whole step (each column is its own median, so sampling + update need not add up);
- sampling: generating the 16 completions (prompt encoding, generation, decoding);
- update: step - sampling (rewards, reference log-probs, advantages, loss forward/backward,
  gradient clipping, AdamW step).
The ratio columns are TRL time / our time (> 1: ours is faster). Ours runs twice, at
micro_batch 4 and 16 (traces per forward/backward; TRL scores the 16 completions in one batch).

How each time is taken:
- ours: `train_rl` through its public API only; it writes per-step `time_sample` (step start to
  the end of `policy.sample`) and `time_step` (step start to after the optimiser step) to the
  run's metrics.jsonl, which this script reads. Its step-0 and final saves are outside both.
- TRL: a `TrainerCallback`, `on_step_begin` to `on_step_end` (the Trainer's logging and the
  next step's data fetch fall outside); sampling is the time spent in the trainer's
  `_generate` (wrapped on the instance with a timer: chat-template tokenisation, `model.generate`,
  decoding; the reference forward and the reward come after it and count as update).

Matched settings (both sides): the same n = 4 x (warmup + steps) training prompts of
`gym:basic_arithmetic` (our task's defaults), chat-template prompts (the same token ids; checked),
temperature 0.7 with no top-k/top-p, at most 64 new tokens, the 0/1 outcome reward of our checker
(TRL's reward function builds `Rollouts` from TRL's completion token ids and calls the same
`task.check`, reward = 1{T <= 64}), group-mean advantages divided by the group's standard
deviation + 1e-4, beta (KL weight) 0.04, token-level loss normalisation over the whole batch
(TRL: `loss_type="dapo"`, its default, with one micro-step per step, so the same sum), one on-policy
optimisation step per batch (TRL: num_iterations = 1, gradient_accumulation_steps = 1,
per_device_train_batch_size = generation_batch_size = 16, num_generations = 4: the PPO ratio is
1, so its clipping is inert), the top 8 of the 30 decoder blocks and the final norm trained
(embeddings, hence the tied output head, and the lower 22 blocks frozen; in TRL with
`requires_grad_(False)` before the model is handed over; trainable parameter counts are printed
for both), AdamW lr 1e-5 constant (TRL: lr_scheduler_type constant, no warm-up), betas
(0.9, 0.95) as our `make_optimizer` sets, eps 1e-8, weight decay 0, gradient-norm clip 1.0,
float32 (TRL's bf16 default switched off), no gradient checkpointing (TRL's default switched
off), a separate frozen float32 reference model on both sides, no vLLM, CPU, 1 torch thread
(OMP_NUM_THREADS=1 before torch is imported, `torch.set_num_threads(1)`, RLConfig.threads = 1).

Differences that remain (settings neither side exposes, or the implementations themselves):
- KL term: TRL uses the k3 estimator exp(r - p) - (r - p) - 1 on the sampled tokens only, with
  both log-probs (policy p and reference r) computed at the sampling temperature (its fused LM
  head divides the logits by `temperature` for the policy and the reference alike). Ours is the
  exact KL over the 49k vocabulary at every visited state, with both distributions at
  `RLConfig.kl_temperature` (ours defaults to 1); this script sets it to the sampling temperature
  (TRL's choice) unless `--kl-temperature` says otherwise, and prints what it used (an RLConfig
  without that field computes the KL at temperature 1).
- TRL's group standard deviation is the unbiased one (n - 1), ours the population one: the
  advantages differ by a constant factor sqrt(4/3), no cost difference.
- How the update computes log-probs is each side's own (what is compared, not a setting): TRL runs
  the whole reference model and the whole policy, with a fused, tiled LM head at the completion
  positions only; ours is whatever `train_rl` does at the time (see learn/rl.py).
- Sampling: TRL calls transformers' `generate` on 16 left-padded rows (every copy of a prompt
  prefilled, finished rows kept until the longest ends); ours is `HFSampler` (each prompt
  prefilled once, finished rows dropped). Different random streams, so the completions and their
  lengths differ; the mean completion length per step is printed for each side.
- Prompt order: both use the same n prompts, each once; TRL's sampler shuffles them with its own
  seed, so a step's 4 prompts differ between the sides.

Noise: the machine is shared. The runs alternate in `--rounds` rounds, the order reversed each
round (ours mb 4, ours mb 16, TRL; then TRL, ours mb 16, ours mb 4, ...), each run from fresh
base weights and the same seeds; medians pool every round's measured steps, and the load
average is printed before and after.

Run (needs the llm and bench extras, and the SmolLM2 conversion: policy/smollm2.py):
`python benchmarks/rl_vs_trl.py --steps 3 --warmup 1 --rounds 2`; prints a Markdown table for
BENCHMARKS.md. Offline: no hub access (HF_HUB_OFFLINE etc. are set here).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch is imported (threads: see main)
    os.environ[_var] = "1"
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from veriscale.learn.rl import RLConfig, train_rl  # noqa: E402
from veriscale.policy.load import load_policy  # noqa: E402
from veriscale.policy.smollm2 import ensure_converted  # noqa: E402
from veriscale.policy.text import HFConfig, encode_prompt, text_rollouts  # noqa: E402
from veriscale.progress import silenced  # noqa: E402
from veriscale.tasks.load import make_task  # noqa: E402

TASK = "gym:basic_arithmetic"


def n_trainable(model: torch.nn.Module) -> int:
    """Trainable parameters, each counted once (a tied head is the embedding)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


def rl_config(args, micro_batch: int, steps: int) -> tuple[RLConfig, dict]:
    """Our RLConfig at the matched settings, built only from fields RLConfig has (it may change)."""
    fields = {f.name for f in dataclasses.fields(RLConfig)}
    kw = dict(n=4 * steps, prompts_per_step=4, G=4, epochs=1, steps=steps, lr=1e-5, beta=0.04, reward="outcome",
              adv_norm="std", temperature=args.temperature, horizon=args.H, micro_batch=micro_batch,
              train_layers=args.layers, weight_decay=0.0, grad_clip=1.0, save_every=10**9, seed=args.seed,
              data_seed=args.seed, threads=1)
    if "kl_temperature" in fields:
        kw["kl_temperature"] = args.temperature if args.kl_temperature is None else args.kl_temperature
    missing = sorted(k for k in kw if k not in fields)
    if missing:
        warnings.warn(f"RLConfig has no field(s) {missing}; left at its defaults")
    kw = {k: v for k, v in kw.items() if k in fields}
    return RLConfig(**kw), kw


def ours(args, task, micro_batch: int) -> tuple[list[dict], dict]:
    """Per-step records (warm-up included) of one `train_rl` run, and facts about the run."""
    steps = args.warmup + args.steps
    cfg, kw = rl_config(args, micro_batch, steps)
    policy = load_policy("smollm2", hf=HFConfig(progress=False))
    out = Path(tempfile.mkdtemp(prefix="rl_vs_trl-ours-"))
    try:
        with silenced():
            train_rl(policy, task, cfg, out)
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = []
    for r in recs:
        total, sample = r.get("time_step"), r.get("time_sample")
        tokens = r.get("tokens")
        rows.append({"step": total, "sampling": sample, "update": None if sample is None else total - sample,
                     "length": None if tokens is None else tokens / 16, "reward": r.get("reward")})
    info = {"trainable": n_trainable(policy.model), "threads": torch.get_num_threads(),
            "kl_temperature": kw.get("kl_temperature", "(no such field: 1, exact KL)")}
    return rows, info


def trl_run(args, task, model_dir: Path) -> tuple[list[dict], dict]:
    """Per-step records (warm-up included) of one GRPOTrainer run, and facts about the run."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    steps = args.warmup + args.steps
    problems = task.prompts("train", 4 * steps, args.seed)  # the prompts train_rl draws (n, data_seed)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    body = model.base_model
    body.embed_tokens.requires_grad_(False)  # what our `train_top` freezes (the head is tied to it)
    for block in body.layers[:len(body.layers) - args.layers]:
        block.requires_grad_(False)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p.text}], "idx": i}
                              for i, p in enumerate(problems)])

    def outcome_reward(prompts, completions, completion_ids, idx, **_):
        """Our 0/1 outcome reward on TRL's completion token ids (EOS kept, as our sampler keeps it)."""
        ro = text_rollouts(tok, [list(c) for c in completion_ids], args.H, tok.pad_token_id)
        T = task.check([problems[i] for i in idx], ro)
        return (T <= args.H).float().tolist()

    out = Path(tempfile.mkdtemp(prefix="rl_vs_trl-trl-"))
    cfg = trl.GRPOConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=16, gradient_accumulation_steps=1,
        num_generations=4, generation_batch_size=16, num_iterations=1, max_completion_length=args.H,
        temperature=args.temperature, top_k=0, top_p=1.0, beta=0.04, scale_rewards=True, loss_type="dapo",
        learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", adam_beta1=0.9,
        adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0, bf16=False, fp16=False,
        gradient_checkpointing=False, use_vllm=False, use_cpu=True, seed=args.seed, data_seed=args.seed,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.rows: list[dict] = []
            self.logs: list[dict] = []
            self.sampling, self.t0, self.threads = 0.0, 0.0, None

        def on_step_begin(self, args_, state, control, **kw):
            self.sampling, self.threads = 0.0, torch.get_num_threads()
            self.t0 = time.perf_counter()

        def on_step_end(self, args_, state, control, **kw):
            total = time.perf_counter() - self.t0
            self.rows.append({"step": total, "sampling": self.sampling if timed_generate else None,
                              "update": total - self.sampling if timed_generate else None})

        def on_log(self, args_, state, control, logs=None, **kw):
            if logs and "reward" in logs:  # per-step training logs (not the final summary)
                self.logs.append(logs)

    timer = StepTimer()
    trainer = trl.GRPOTrainer(model=model, reward_funcs=outcome_reward, args=cfg, train_dataset=data,
                              processing_class=tok, callbacks=[timer])
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    generate = getattr(trainer, "_generate", None)
    timed_generate = callable(generate)
    if timed_generate:
        def _generate(*a, **kw):
            t = time.perf_counter()
            try:
                return generate(*a, **kw)
            finally:
                timer.sampling += time.perf_counter() - t
        trainer._generate = _generate
    else:
        warnings.warn("GRPOTrainer has no _generate method: TRL's sampling/update split is not measured")
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for row, log in zip(timer.rows, timer.logs):
        row["length"], row["reward"] = log.get("completions/mean_length"), log.get("reward")
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's wrapper
    opt = optimizer.param_groups[0]
    ckpt = getattr(trainer.model, "is_activation_checkpointing", None)
    info = {"trainable": n_trainable(trainer.model), "threads": timer.threads, "version": trl.__version__,
            "setup": f"optimizer {type(optimizer).__name__} lr {opt['lr']:g} betas {tuple(opt['betas'])} "
                     f"eps {opt['eps']:g} weight decay {opt['weight_decay']:g}, bf16 {trainer.args.bf16}, "
                     f"activation checkpointing {ckpt}, reference model {type(trainer.ref_model).__name__}"}
    del trainer, model
    return timer.rows, info


def med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


def check_prompts(task, args, model_dir: Path) -> bool:
    """Our prompt ids (HFSampler's encoding) equal TRL's (apply_chat_template with tokenize=True)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    p = task.prompts("train", 1, args.seed)[0]
    theirs = tok.apply_chat_template(conversation=[[{"role": "user", "content": p.text}]], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"][0]
    return encode_prompt(tok, p, True, "") == list(theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="measured steps per run (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="steps per run discarded first")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (ours mb 4, ours mb 16, TRL), order alternating")
    ap.add_argument("--micro-batches", type=int, nargs="+", default=[4, 16], help="our micro_batch values")
    ap.add_argument("--H", type=int, default=64, help="most new tokens per completion")
    ap.add_argument("--layers", type=int, default=8, help="top decoder blocks trained")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--kl-temperature", type=float, default=None,
                    help="our RLConfig.kl_temperature where it exists (default: the sampling temperature, TRL's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import transformers
    import trl

    transformers.utils.logging.disable_progress_bar()  # weight-loading bars
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renamed-argument notices

    model_dir = ensure_converted()
    task = make_task(TASK)
    same_prompts = check_prompts(task, args, model_dir)
    runs = [f"ours mb {m}" for m in args.micro_batches] + ["TRL"]
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    info: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    for rnd in range(args.rounds):
        for name in (runs if rnd % 2 == 0 else runs[::-1]):
            t = time.perf_counter()
            if name == "TRL":
                r, i = trl_run(args, task, model_dir)
            else:
                r, i = ours(args, task, int(name.split()[-1]))
            rows[name] += r[args.warmup:]
            info[name] = i
            print(f"round {rnd + 1}, {name}: " + ", ".join(f"{x['step']:.1f}s" for x in r)
                  + f" per step ({time.perf_counter() - t:.0f} s with loading)", flush=True)
    load_after = os.getloadavg()[0]

    trl_step, trl_samp, trl_upd = (med(rows["TRL"], k) for k in ("step", "sampling", "update"))
    print(f"\nSmolLM2-135M-Instruct float32, CPU, 1 torch thread; {TASK}, 4 prompts x G=4 per step, "
          f"H={args.H} new tokens, temperature {args.temperature}, top {args.layers} of 30 blocks trained, "
          f"beta 0.04, AdamW lr 1e-5 betas (0.9, 0.95); median of {args.steps} steps x {args.rounds} rounds per "
          f"row after {args.warmup} warm-up step(s) per run; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, TRL {trl.__version__}; load average {load_before:.1f} before, "
          f"{load_after:.1f} after; {time.perf_counter() - t_start:.0f} s in all")
    print(f"- same prompt token ids on both sides: {same_prompts}; trainable parameters: "
          + ", ".join(f"{n} {info[n]['trainable']:,}" for n in runs)
          + "; torch threads during the runs: " + ", ".join(f"{n} {info[n]['threads']}" for n in runs))
    for n in runs[:-1]:
        print(f"- {n}: KL temperature {info[n]['kl_temperature']}")
    print(f"- TRL after training: {info['TRL']['setup']}")
    print()
    print("| learner | s/step | sampling s | update s | mean completion tokens | mean reward "
          "| TRL/ours step | TRL/ours sampling | TRL/ours update |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in runs:
        step, samp, upd = (med(rows[n], k) for k in ("step", "sampling", "update"))
        lengths = [r["length"] for r in rows[n] if r.get("length") is not None]
        rewards = [r["reward"] for r in rows[n] if r.get("reward") is not None]
        ratio = (lambda a, b: None if a is None or b is None else a / b)
        label = "TRL GRPOTrainer" if n == "TRL" else f"ours, train_rl micro_batch {n.split()[-1]}"
        print(f"| {label} | {fmt(step)} | {fmt(samp)} | {fmt(upd)} | "
              f"{fmt(statistics.mean(lengths) if lengths else None)} | "
              f"{fmt(statistics.mean(rewards) if rewards else None, '.2f')} | "
              + " | ".join("—" if n == "TRL" or ratio(a, b) is None else f"{ratio(a, b):.2f}x"
                           for a, b in ((trl_step, step), (trl_samp, samp), (trl_upd, upd))) + " |")


if __name__ == "__main__":
    main()
