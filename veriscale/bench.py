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
and transformers runs alternate so both see the same load. The reference is timed once: one
run lasts many seconds and its speed-up is large, so its noise does not change the reading.
"""

from __future__ import annotations

import platform
import time
import warnings
from typing import Callable

import torch

from veriscale.learn.loop import OptimConfig, masked_ce
from veriscale.learn.pretrain import teacher_dataset
from veriscale.policy.engine import generate, generate_reference
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.policy.sampler import resolve_model_config
from veriscale.tasks.planted import PlantedConfig, PlantedTask


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _best(fn: Callable[[], object], repeats: int) -> float:
    return min(_seconds(fn) for _ in range(repeats))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_flops(n: int = 2048, repeats: int = 3) -> float:
    """fp32 FLOP/s of an (n, n) @ (n, n) torch.mm: the machine's peak that MFU divides by."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    return 2 * n**3 / _best(lambda: torch.mm(a, b), repeats)


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


def _training_row(model: GPT, task: PlantedTask, repeats: int, peak: float) -> dict:
    optim = OptimConfig()
    x, y, m = teacher_dataset(task, "train", optim.batch_size, seed=0)  # (64, 133) each
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=(0.9, 0.95),
                            weight_decay=optim.weight_decay)
    model.train()

    def step():
        loss = masked_ce(model(x), y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()

    t = _best(step, repeats)  # no warm-up: a step lasts seconds, first-step allocations are noise
    model.eval()
    tokens = x.numel()
    flops = train_flops_per_token(model, x.shape[1]) * tokens / t
    return {"what": "pretraining step (fwd+bwd+AdamW)", "batch": f"{x.shape[0]}x{x.shape[1]}", "tokens": tokens,
            "seconds": t, "tok_s": tokens / t, "ratio": f"MFU {100 * flops / peak:.1f}%", "flops": flops}


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

    task = PlantedTask(PlantedConfig())
    cfg = resolve_model_config(GPTConfig(), task)
    if task.cfg.prompt_len + 2 + new_tokens > cfg.max_seq_len:
        raise ValueError(f"new_tokens={new_tokens} exceeds the default horizon {task.cfg.horizon}")
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with warnings.catch_warnings():  # transformers warns about generation-config defaults
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        hf = hf_twin(cfg, task)
        peak = matmul_flops(repeats=repeats)
        rows = _sampling_rows(model, hf, task, batches, new_tokens, repeats)
    train = _training_row(model, task, repeats, peak)
    rows.append(train)
    rows.append({"what": "fp32 matmul peak (2048^3 torch.mm)", "batch": "", "tokens": "", "seconds": "",
                 "tok_s": "", "ratio": f"{peak / 1e9:.1f} GFLOP/s"})
    head = [
        f"machine: {torch.get_num_threads()} torch threads, {cpu_model()}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"model: n_layer={cfg.n_layer} n_head={cfg.n_head} d_model={cfg.d_model} vocab={cfg.vocab_size} "
        f"max_seq_len={cfg.max_seq_len}, random weights; prompts of {task.cfg.prompt_len + 2} tokens, "
        f"{new_tokens} new tokens, temperature 1, EOS disabled; best of {repeats}",
        f"training: {train['flops'] / 1e9:.2f} model GFLOP/s (6N + 12*n_layer*d_model*T per token, "
        f"N={model.num_params(non_embedding=False):,})",
        "",
    ]
    columns = [("what", "measurement"), ("batch", "batch"), ("tokens", "tokens"), ("seconds", "seconds"),
               ("tok_s", "tokens/s"), ("ratio", "engine speed-up / MFU / peak")]
    return "\n".join(head) + "\n" + _markdown(rows, columns)
