"""Budget forcing: cap or extend a trace's thinking by editing the decoding, for any sampler.

The idea comes from s1 (Muennighoff et al. 2025, "s1: Simple test-time scaling"): to hold a
reasoning trace to a budget, stop it and append an answer cue; to make it think longer, suppress
its end-of-thinking token and append "Wait". Here it works on any sampler that exposes
`encode(prompt) -> ids`, `generate_ids(ids, max_new, *, temperature, generator) -> ids`, `tok`,
`eos_ids` and `pad_id` (the transformers `HFSampler` and the `VLLMSampler`), so it is the same
decoding logic on every model.

Rules, for a budget of H generated tokens per row. Every count is in generated tokens, the
forced ones (cue, Wait) included: they are charged like sampled ones.
- cue_ids is `cfg.cue` tokenised without special tokens. With `cap` on, the thinking cap is
  C = H - len(cue_ids) - answer_tokens (ValueError if C < 1); with `cap` off, C = H.
- Cap: a row that reaches C tokens without ending gets cue_ids appended (positions
  [C, C+len(cue_ids))), then the model writes at most `answer_tokens` more tokens, ending at an
  EOS or there. So a row never exceeds H tokens. With `cap` off a row just stops at H.
- Extend: a row that emits an EOS while the tokens before it number fewer than `min_tokens`, and
  that has had fewer than `max_waits` insertions, loses that EOS and gets wait_ids appended
  instead, then keeps thinking under the same cap. That needs the wait ids to fit, i.e. end at
  or before C; when they do not, the row is forced like a capped one (cue_ids, then the answer)
  with `cap` on, and keeps its EOS and ends with `cap` off.
- Any other ending (an EOS otherwise, or a sampler stop string completed before C) ends the row
  as sampled.

Decoding runs in rounds over the rows still going: each round is one `generate_ids` call for all
of them on prompt + generated-so-far, with the largest remaining allowance as max_new; each row's
continuation is cut at its own allowance, which is exact because tokens are sampled left to
right. One generator seeded with `seed` serves every round, so the same prompts and seed give
the same rollouts.

Usage:
    sampler = load_policy("hf:PATH").sampler
    r = forced_sample(sampler, prompts, H=256, cfg=BudgetForcing(min_tokens=128), seed=0)
    # r is a Rollouts of width H, exactly like sampler.sample(prompts, H) returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from veriscale.config import knob
from veriscale.policy.text import text_rollouts
from veriscale.tasks.base import Rollouts


@dataclass
class BudgetForcing:
    """s1-style budget forcing (Muennighoff et al. 2025, "s1: Simple test-time scaling"); the
    rules are in the module docstring."""

    cap: bool = knob(True, "cap each trace at H by forcing the answer cue")
    cue: str = knob(" Final answer:", "text appended when thinking reaches the cap")
    answer_tokens: int = knob(8, "tokens reserved after the cue for the answer", min=1)
    min_tokens: int = knob(0, "extend: while a trace has fewer tokens than this, an EOS is replaced by "
                              "`wait` (0 = never extend)", min=0)
    wait: str = knob(" Wait", "text appended in place of a suppressed EOS")
    max_waits: int = knob(2, "most `wait` insertions per trace", min=0)


@dataclass
class _Row:
    """One trace being forced: its generated ids so far and where it stands."""

    ids: list[int]
    waits: int = 0
    answering: bool = False  # the cue is in; the next continuation is the answer
    done: bool = False


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def forced_sample(sampler: Any, prompts: Sequence[Any], H: int, cfg: BudgetForcing, *, temperature: float = 1.0,
                  seed: int = 0, generator: torch.Generator | None = None) -> Rollouts:
    """One budget-forced rollout per prompt, at most H tokens each; tokens are (B, H)."""
    cue, wait = _ids(sampler.tok, cfg.cue), _ids(sampler.tok, cfg.wait)
    C = H - len(cue) - cfg.answer_tokens if cfg.cap else H
    if C < 1:
        raise ValueError(f"budget forcing: H={H} leaves no thinking tokens after the cue ({len(cue)} tokens) "
                         f"and answer_tokens={cfg.answer_tokens}; raise H or lower answer_tokens")
    eos = set(sampler.eos_ids.tolist())
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    prompt_ids = [sampler.encode(p) for p in prompts]
    rows = [_Row([]) for _ in prompts]

    def force_cue(row: _Row) -> None:
        row.ids += cue
        row.answering = True

    while True:
        for row in rows:  # a thinking row at its cap is forced (or, cap off, stops) before sampling
            if not row.done and not row.answering and len(row.ids) >= C:
                if cfg.cap:
                    force_cue(row)
                else:
                    row.done = True
        active = [i for i, row in enumerate(rows) if not row.done]
        if not active:
            break
        allow = [cfg.answer_tokens if rows[i].answering else C - len(rows[i].ids) for i in active]
        conts = sampler.generate_ids([prompt_ids[i] + rows[i].ids for i in active], max(allow),
                                     temperature=temperature, generator=g)
        for i, a, cont in zip(active, allow, conts):
            row, cont = rows[i], cont[:a]
            if row.answering:
                row.ids += cont
                row.done = True
                continue
            ended_eos = bool(cont) and cont[-1] in eos
            n = len(row.ids) + len(cont) - ended_eos  # thinking tokens before the EOS, if any
            fits = n + len(wait) <= C
            if ended_eos and n < cfg.min_tokens and row.waits < cfg.max_waits and (fits or cfg.cap):
                row.ids += cont[:-1]  # the EOS is dropped
                if fits:
                    row.ids += wait
                    row.waits += 1
                else:
                    force_cue(row)
            else:
                row.ids += cont
                # ended (EOS or stop string) unless it ran to its allowance, then capped next round
                row.done = len(cont) < a or ended_eos
    return text_rollouts(sampler.tok, [row.ids for row in rows], H, sampler.pad_id)
