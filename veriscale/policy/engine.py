"""Batched sampling for the tiny GPT: a KV-cache engine and the slow full-recompute reference.

Both speak token ids and return `Rollouts` (tokens, sampled-token mask, per-row counts); they
share `sample_next`, so at temperature 0 they must agree token for token (tested).

The engine prefills all prompts at once, then feeds one token per step for the whole batch.
Rows stop at EOS (the EOS token is kept and counted). When a quarter of the live rows have
finished, the batch and its cache are compacted so finished rows cost nothing further.
"""

from __future__ import annotations

import torch

from veriscale.policy.gpt import GPT
from veriscale.tasks.base import Rollouts


SAMPLE_CHUNK = 2**20  # logits per row chunk of an inverse-CDF draw: 21 rows of SmolLM2's 49k vocabulary, 4 of Gemma 3's 262k


def _probs(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """(B, V) logits -> (B, V) float32 softmax at `temperature`, outside the top k set to 0."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits.softmax(-1)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None,
                draw: str = "multinomial", chunk: int = SAMPLE_CHUNK) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. temperature 0 is greedy; top_k 0 keeps every token.

    `draw` is how one token is drawn from the softmax p (the same distribution, different random
    numbers): "multinomial" is `torch.multinomial`; "inverse_cdf" takes the first token whose
    cumulative probability exceeds u * sum(p), u ~ U[0, 1), with the cumulative sum in float64
    (its rounding, at most about 1e-11 over 49k terms, is all a token's probability can move).
    On a CPU and a 49k vocabulary the latter is several times faster (BENCHMARKS.md); the tiny GPT
    keeps the former, which its stored records were drawn with.

    The inverse-CDF draw works on chunks of rows of at most `chunk` logits, so its float32 and
    float64 copies of (rows, V) do not grow with the rows (a 256-row batch of a 262k vocabulary
    would hold about 1.3 GB of them) and stay small enough to be reused from the CPU's caches
    (chunks of 2**20 logits draw 256 rows of a 49k vocabulary in about half the time that chunks of
    2**24 take: BENCHMARKS.md); every u is drawn first in one call, so the tokens do not depend on the
    chunking (tested).
    """
    if temperature <= 0:
        return logits.argmax(-1)
    if draw == "multinomial":
        return torch.multinomial(_probs(logits, temperature, top_k), 1, generator=generator).squeeze(1)
    if draw != "inverse_cdf":
        raise ValueError(f"draw must be 'multinomial' or 'inverse_cdf', not {draw!r}")
    B, V = logits.shape
    u = torch.rand(B, 1, generator=generator, dtype=torch.float64, device=logits.device)  # (B, 1)
    out = torch.empty(B, dtype=torch.long, device=logits.device)
    rows = max(1, chunk // V)
    for i in range(0, B, rows):
        cdf = _probs(logits[i:i + rows], temperature, top_k).double().cumsum(-1)  # (rows, V)
        # right=True: the first index with cdf > u, so a zero-probability token (cdf flat) is never taken
        out[i:i + rows] = torch.searchsorted(cdf, u[i:i + rows] * cdf[:, -1:], right=True).squeeze(1).clamp(max=V - 1)
    return out


def _empty(B: int, max_new: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.full((B, max_new), pad_id, dtype=torch.long, device=device),
            torch.zeros(B, max_new, dtype=torch.bool, device=device))


@torch.inference_mode()
def generate(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, *, eos_id: int, pad_id: int,
             temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None,
             compact: bool = True) -> Rollouts:
    """KV-cache sampling of up to max_new_tokens per row for (B, P) equal-length prompts."""
    B, P = prompt_ids.shape
    tokens, mask = _empty(B, max_new_tokens, pad_id, prompt_ids.device)
    cache = model.new_cache(B, P + max_new_tokens)
    logits = model(prompt_ids, cache)[:, -1]  # (B, V)
    live = torch.arange(B, device=prompt_ids.device)  # (b,) original row of each cache row
    done = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)  # (b,) finished, not yet dropped
    for t in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_k, generator)  # (b,)
        rows = live[~done]
        tokens[rows, t] = nxt[~done]
        mask[rows, t] = True
        done = done | (nxt == eos_id)
        if t + 1 == max_new_tokens or done.all():
            break
        # Finished rows keep running (cheaper than copying the cache each step) until a
        # quarter of the batch has finished; then the batch and its cache are compacted.
        if compact and (~done).sum() <= 0.75 * len(live):
            keep = ~done
            live, nxt, done = live[keep], nxt[keep], done[keep]
            cache.select(keep)
        logits = model(nxt[:, None], cache)[:, -1]
    return Rollouts(tokens=tokens, mask=mask, counts=mask.sum(1))


@torch.inference_mode()
def generate_reference(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, *, eos_id: int, pad_id: int,
                       temperature: float = 1.0, top_k: int = 0,
                       generator: torch.Generator | None = None) -> Rollouts:
    """Slow reference: recompute the whole sequence every step, no cache, no compaction."""
    B, _ = prompt_ids.shape
    tokens, mask = _empty(B, max_new_tokens, pad_id, prompt_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)
    seq = prompt_ids
    for t in range(max_new_tokens):
        nxt = sample_next(model(seq)[:, -1], temperature, top_k, generator)
        tokens[:, t] = torch.where(done, pad_id, nxt)
        mask[:, t] = ~done
        done = done | (nxt == eos_id)
        if done.all():
            break
        seq = torch.cat([seq, nxt[:, None]], 1)
    return Rollouts(tokens=tokens, mask=mask, counts=mask.sum(1))
