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

Two ways to decode, one set of rules (`_Rules`, a machine over each row's tokens):
- inline (the transformers sampler, `edits_inline`): one pass; after each sampled token the
  rules say whether the row ends, keeps the token, or has tokens forced in (the cue, "Wait"),
  which the model reads one per step before it samples again. A batch runs once to its longest
  row.
- rounds (any sampler; the reference): each round is one `generate_ids` call for the rows still
  going on prompt + generated-so-far, with the largest remaining allowance as max_new; each
  row's continuation is read up to its allowance and up to the first token the rules end or
  edit at (what follows read another trace). Every round runs to its longest row again.
One generator seeded with `seed` serves the whole draw, so the same prompts and seed give the same
rollouts (inline and rounds draw different numbers; at temperature 0 they agree).

Usage:
    sampler = load_policy("hf:PATH").sampler
    r = forced_sample(sampler, prompts, H=256, cfg=BudgetForcing(min_tokens=128), seed=0)
    # r is a Rollouts of width H, exactly like sampler.sample(prompts, H) returns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
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

    def at(self, H: int, extend_share: float) -> "BudgetForcing":
        """This forcing at budget H: the cap at H (the draw's width) and "Wait" in place of an
        end-of-thinking before extend_share x H tokens (s1's extension; 0 = cap only)."""
        return replace(self, min_tokens=round(extend_share * H))


@dataclass
class _Row:
    """One trace being forced: its generated ids so far and where it stands."""

    ids: list[int]
    waits: int = 0
    answering: bool = False  # the cue is in; what follows is the answer
    left: int = 0  # answer tokens still allowed, once answering
    done: bool = False


class _Rules:
    """The rules of the module docstring as a machine over one row's tokens, so decoding in
    rounds and decoding with inline edits apply the same rules."""

    def __init__(self, cfg: BudgetForcing, cue: list[int], wait: list[int], C: int, eos: set[int]):
        self.cfg, self.cue, self.wait, self.C, self.eos = cfg, cue, wait, C, eos

    def allowance(self, row: _Row) -> int:
        """Tokens the row may still sample before the rules step in."""
        return row.left if row.answering else self.C - len(row.ids)

    def push(self, row: _Row, t: int) -> list[int] | None:
        """Take sampled token t: None when the row has ended, else the tokens it added (t and/or
        forced ones), which the model reads before it samples again."""
        if row.answering:
            row.ids.append(t)
            row.left -= 1
            row.done = t in self.eos or row.left == 0
            return None if row.done else [t]
        if t in self.eos:
            n = len(row.ids)  # thinking tokens before the EOS
            fits = n + len(self.wait) <= self.C
            if n < self.cfg.min_tokens and row.waits < self.cfg.max_waits and (fits or self.cfg.cap):
                if not fits:
                    return self._cue(row, [])  # the EOS is dropped
                row.ids += self.wait
                row.waits += 1
                return self._capped(row, list(self.wait))
            row.ids.append(t)
            row.done = True
            return None
        row.ids.append(t)
        return self._capped(row, [t])

    def _capped(self, row: _Row, added: list[int]) -> list[int] | None:
        """After thinking tokens were added: at the cap C, force the cue (or, cap off, end)."""
        if len(row.ids) < self.C:
            return added
        if self.cfg.cap:
            return self._cue(row, added)
        row.done = True
        return None

    def _cue(self, row: _Row, added: list[int]) -> list[int]:
        row.ids += self.cue
        row.answering, row.left = True, self.cfg.answer_tokens
        return added + self.cue


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def forced_sample(sampler: Any, prompts: Sequence[Any], H: int, cfg: BudgetForcing, *, temperature: float = 1.0,
                  seed: int = 0, generator: torch.Generator | None = None, rounds: bool = False) -> Rollouts:
    """One budget-forced rollout per prompt, at most H tokens each; tokens are (B, H). A sampler
    that can edit rows while decoding (`edits_inline`, no stop strings) decodes in one pass;
    others, or any with `rounds`, decode in rounds (the reference the one pass is tested against)."""
    cue, wait = _ids(sampler.tok, cfg.cue), _ids(sampler.tok, cfg.wait)
    C = H - len(cue) - cfg.answer_tokens if cfg.cap else H
    if C < 1:
        raise ValueError(f"budget forcing: H={H} leaves no thinking tokens after the cue ({len(cue)} tokens) "
                         f"and answer_tokens={cfg.answer_tokens}; raise H or lower answer_tokens")
    rules = _Rules(cfg, cue, wait, C, set(sampler.eos_ids.tolist()))
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    prompt_ids = [sampler.encode(p) for p in prompts]
    rows = [_Row([]) for _ in prompts]
    inline = getattr(sampler, "edits_inline", False) and not rounds
    if inline and sampler.cfg.stop:
        warnings.warn("budget forcing decodes in rounds, not in one pass: the one-pass editor does not read stop "
                      "strings (hf.stop = [] enables it)", stacklevel=2)
    if inline and not sampler.cfg.stop:
        sampler.generate_ids(prompt_ids, H, temperature=temperature, generator=g,
                             editor=lambda i, t: rules.push(rows[i], t))
        return text_rollouts(sampler.tok, [row.ids for row in rows], H, sampler.pad_id)
    while True:
        active = [i for i, row in enumerate(rows) if not row.done]
        if not active:
            break
        allow = [rules.allowance(rows[i]) for i in active]
        conts = sampler.generate_ids([prompt_ids[i] + rows[i].ids for i in active], max(allow),
                                     temperature=temperature, generator=g)
        for i, a, cont in zip(active, allow, conts):
            for t in cont[:a]:
                if rules.push(rows[i], t) != [t]:
                    break  # ended, or edited: the rest of this continuation read another trace
            else:
                rows[i].done = True  # it ended before its allowance without an EOS: a stop string
    return text_rollouts(sampler.tok, [row.ids for row in rows], H, sampler.pad_id)
