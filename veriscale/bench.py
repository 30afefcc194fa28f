"""`veriscale bench engine`: sampling and training speed of the tiny GPT, measured in one process.

Everything runs on the default model size (GPTConfig defaults, the planted task's default
vocabulary, max_seq_len = prompt + horizon) with random weights, on the CPU. Figures are
meant to be read as ratios against baselines timed in the same run, because the machines this
runs on are shared and noisy:

- sampling: our KV-cache `engine.generate` against the full-recompute `generate_reference`
  and against transformers' `GPT2LMHeadModel.generate` (KV cache, multinomial sampling) with
  the same sizes. EOS is disabled (eos_id=-1 for ours, min_new_tokens for transformers) so
  every row samples exactly `new_tokens` tokens; tokens/s counts sampled tokens only.
- training: one pretraining step (forward, `masked_ce`, backward, clip, AdamW) on teacher
  traces at the default batch; model-FLOP utilisation (MFU) is its model FLOP/s divided by the
  fp32 matmul rate of this machine, measured here with a large torch.mm.

Timings are the best of `repeats` runs (the least disturbed by other processes); the engine
and transformers runs alternate, and so do the training step and the matmul, so that each pair
sees the same load. The reference is timed once: one run lasts many seconds and its speed-up
is large, so its noise does not change the reading. Threads are torch's setting (the CLI's
--threads); on an oversubscribed machine one thread avoids OpenMP waits between ops.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from typing import Callable

import torch

from veriscale.learn.loop import OptimConfig, make_optimizer, masked_ce
from veriscale.learn.pretrain import teacher_dataset
from veriscale.policy.engine import generate, generate_reference
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.tiny import resolve_model_config
from veriscale.tasks.planted import PlantedConfig, PlantedTask


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    """The CPU flags that decide a matmul's rate (AVX2, AVX-512 and its bf16, AMX), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            have = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return ", ".join(f for f in wanted if f in have) or "none of " + ", ".join(wanted)


def hf_twin(cfg: GPTConfig, task: PlantedTask):
    """transformers GPT-2 with our sizes and random weights (built from a config, no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hcfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=task.bos, eos_token_id=task.eos,
                      pad_token_id=task.pad)
    return GPT2LMHeadModel(hcfg).eval()


def train_flops_per_token(model: GPT, seq_len: int) -> float:
    """PaLM-style estimate (Chowdhery et al. 2022, appendix B): 6·N + 12·n_layer·d_model·seq_len.

    N counts the weights used in matmuls: all parameters except the position embedding (the
    token embedding is the tied output head). The second term is the attention scores and
    weighted sum (forward + backward) over the full sequence, not halved for causality.
    """
    c = model.cfg
    return 6 * model.num_params(non_embedding=False) + 12 * c.n_layer * c.d_model * seq_len


def _sampling_rows(model: GPT, hf, task: PlantedTask, batches: list[int], new_tokens: int,
                   repeats: int) -> list[dict]:
    rows = []
    for B in batches:
        ids = task.encode(task.prompts("train", B, seed=B))  # (B, k+2)
        ones = torch.ones_like(ids)
        # top_k=0: transformers otherwise adds its default top-50 filter; ours samples the full softmax.
        hf_kw = dict(attention_mask=ones, do_sample=True, top_k=0, use_cache=True,
                     max_new_tokens=new_tokens, min_new_tokens=new_tokens)

        def engine(n=new_tokens):
            out = generate(model, ids, n, eos_id=-1, pad_id=task.pad, generator=torch.Generator().manual_seed(0))
            assert int(out.counts.sum()) == B * n

        def reference():
            out = generate_reference(model, ids, new_tokens, eos_id=-1, pad_id=task.pad,
                                     generator=torch.Generator().manual_seed(0))
            assert int(out.counts.sum()) == B * new_tokens

        def hf_generate(**over):
            with torch.inference_mode():
                out = hf.generate(ids, **{**hf_kw, **over})
            assert out.shape == (B, ids.shape[1] + over.get("max_new_tokens", new_tokens))

        engine(2), hf_generate(max_new_tokens=2, min_new_tokens=2)  # warm-up
        t_engine, t_hf = float("inf"), float("inf")
        for _ in range(repeats):  # alternate so both see the same background load
            t_engine = min(t_engine, _seconds(engine))
            t_hf = min(t_hf, _seconds(hf_generate))
        t_ref = _seconds(reference)
        n = B * new_tokens
        for name, t in (("engine (KV cache)", t_engine), ("reference (full recompute)", t_ref),
                        ("transformers generate (KV cache)", t_hf)):
            rows.append({"what": name, "batch": B, "tokens": n, "seconds": t, "tok_s": n / t,
                         "ratio": "-" if name.startswith("engine") else f"{t / t_engine:.2f}x"})
    return rows


def _training_row(model: GPT, task: PlantedTask, repeats: int) -> dict:
    """One pretraining step as `train_lm` takes it, alternated with the matmul peak (same load)."""
    optim = OptimConfig()
    x, y, m = teacher_dataset(task, "train", optim.batch_size, seed=0)  # (64, 133) each at the defaults
    opt = make_optimizer(model, optim.lr, optim.weight_decay)
    model.train()

    def step():
        loss = masked_ce(model(x), y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    step(), torch.mm(a, b)  # warm-up (AdamW state, matmul buffers)
    t_step, t_mm = float("inf"), float("inf")
    for _ in range(repeats):
        t_step = min(t_step, _seconds(step))
        t_mm = min(t_mm, _seconds(lambda: torch.mm(a, b)))
    model.eval()
    tokens = x.numel()
    flops, peak = train_flops_per_token(model, x.shape[1]) * tokens / t_step, 2 * 2048**3 / t_mm
    return {"what": "pretraining step (fwd+bwd+AdamW)", "batch": f"{x.shape[0]}x{x.shape[1]}", "tokens": tokens,
            "seconds": t_step, "tok_s": tokens / t_step, "ratio": f"MFU {100 * flops / peak:.1f}%",
            "flops": flops, "peak": peak, "seq": x.shape[1], "mfu": flops / peak}


def _verdicts(rows: list[dict], train: dict) -> list[str]:
    """The issue's targets: engine >= 2x transformers generate at batch 256; MFU >= 20%."""
    out = [f"- target MFU >= 20%: {'met' if train['mfu'] >= 0.2 else 'missed'} ({100 * train['mfu']:.1f}%)"]
    hf = [r for r in rows if r["what"].startswith("transformers") and r["batch"] == 256]
    if hf:
        ratio = float(hf[0]["ratio"].rstrip("x"))
        out.insert(0, f"- target engine >= 2x transformers generate at batch 256: "
                      f"{'met' if ratio >= 2 else 'missed'} ({ratio:.2f}x)")
    return out


def _markdown(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.3f}" if v < 10 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[k]) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def run_engine_bench(batches: list[int], new_tokens: int, repeats: int) -> str:
    """Time sampling and a pretraining step; return a markdown report (header lines + table)."""
    import transformers

    # The task's horizon is new_tokens (128 in the issue, so max_seq_len = 4 + 2 + 128 = 134 and
    # training sequences are 133 tokens); every other task and model knob keeps its default.
    task = PlantedTask(PlantedConfig(horizon=max(new_tokens, PlantedConfig.answer_len)))
    cfg = resolve_model_config(GPTConfig(), task)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with warnings.catch_warnings():  # transformers warns about generation-config defaults
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        hf = hf_twin(cfg, task)
        rows = _sampling_rows(model, hf, task, batches, new_tokens, repeats)
    train = _training_row(model, task, repeats)
    rows.append(train)
    rows.append({"what": "fp32 matmul peak (2048^3 torch.mm)", "batch": "", "tokens": "", "seconds": "",
                 "tok_s": "", "ratio": f"{train['peak'] / 1e9:.1f} GFLOP/s"})
    head = [
        f"- machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {cpu_model()}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        f"- model: n_layer={cfg.n_layer} n_head={cfg.n_head} d_model={cfg.d_model} vocab={cfg.vocab_size} "
        f"max_seq_len={cfg.max_seq_len}, random weights; prompts of {task.cfg.prompt_len + 2} tokens, "
        f"{new_tokens} new tokens, temperature 1, EOS disabled; best of {repeats}",
        f"- training: {train['flops'] / 1e9:.2f} model GFLOP/s, estimated as (6N + 12*n_layer*d_model*T) per "
        f"token, N={model.num_params(non_embedding=False):,} (all but position embeddings), T={train['seq']}",
        *_verdicts(rows, train),
        "",
    ]
    columns = [("what", "measurement"), ("batch", "batch"), ("tokens", "tokens"), ("seconds", "seconds"),
               ("tok_s", "tokens/s"), ("ratio", "engine speed-up / MFU / peak")]
    return "\n".join(head) + "\n" + _markdown(rows, columns)
