"""The didactic task of SPEC §2: contextualized planted subsequence.

A prompt is k content tokens x. A hidden map g (fixed by `map_seed`) gives the target
y*(x)_j = (x_{p(j)} + c_j) mod V. A trace succeeds when y* appears contiguously; its
first-success index T is the 1-based position of the target's last token.

Token ids: content 0..V-1, filler V..V+F*S-1 (S styles of F tokens each), then BOS, SEP, EOS,
PAD. A model sees `BOS x SEP` and writes the trace.

The teacher writes attempts: l filler tokens (of one style per trace) then an m-token
candidate that is correct with probability q, else the target with `corrupt_positions`
positions changed. It stops with EOS right after the target first appears (the checker's T:
normally its correct candidate, but the tail of one candidate and the head of the next can
spell the target too when l = 0), else keeps attempting until the budget H ends. l is drawn per
attempt from the heterogeneity level's distribution:
  none    l = `fixed_filler` every attempt (one length: the homogeneous level);
  low     l uniform on {0..floor(low_scale * H^beta)};
  high    l uniform on {0..floor(spread_scale * H^beta)};
  custom  a weight per l value.
The base policy pi_b is pretrained on teacher traces (q < 1: several attempts, errors). The
expert whose traces VF clones is the same teacher with candidates correct with probability
`expert_q`, conditioned on success within H. With expert_q = 1 (default, ours) the expert's
first candidate is right, so the spread of its first-success index comes from the level's
filler alone (level `none` is exactly homogeneous, sigma = 0); expert_q = q gives SPEC's
"teacher conditioned on success" search traces, whose failed attempts add spread at every level.

Example (V=16, see tests): prompt 3 7 1 C with p=(2,0,3,1), c=(1,5,0,9) has target 2 8 C 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from veriscale.config import ConfigError, knob
from veriscale.tasks.base import NEVER, Rollouts


@dataclass
class PlantedConfig:
    vocab: int = knob(16, "V: number of content tokens", min=2, max=256)
    prompt_len: int = knob(4, "k: prompt length in content tokens", min=1, max=32)
    answer_len: int = knob(4, "m: target length in content tokens", min=1, max=32)
    map_seed: int = knob(0, "seed of the hidden map g (permutation p and offsets c)", min=0)
    horizon: int = knob(32, "H: the largest budget (trace length in tokens) the task is built for", min=2)
    q: float = knob(0.4, "probability that a teacher candidate is correct (ours)", min=0.0, max=1.0)
    corrupt_positions: int = knob(1, "positions changed in an incorrect teacher candidate (ours)", min=1)
    expert_q: float = knob(1.0, "probability that an expert candidate is correct (1 = the expert's spread is "
                                "its filler alone; q = SPEC's teacher conditioned on success; ours)", min=0.01, max=1.0)
    heterogeneity: Literal["none", "low", "high", "custom"] = knob(
        "high", "filler-length distribution: none = fixed (homogeneous), low / high = uniform spread growing "
                "with H, custom = weights")
    fixed_filler: int = knob(0, "l for heterogeneity=none (fixed filler tokens per attempt; ours)", min=0)
    low_scale: float = knob(0.0625, "s of level low: uniform on 0..floor(s*H^beta) (ours)", min=0.0)
    spread_scale: float = knob(0.25, "s of level high: uniform on 0..floor(s*H^beta) (ours)", min=0.0)
    spread_exponent: float = knob(1.0, "beta: high spread grows like H^beta (1 linear, 0.5 sqrt)", min=0.0, max=2.0)
    custom_weights: list[float] = knob([1.0], "heterogeneity=custom: weight of l = 0, 1, 2, ...", min=0.0)
    filler_tokens: int = knob(4, "F: filler alphabet size per style", min=1, max=64)
    styles: int = knob(1, "S: number of filler styles (disjoint alphabets; one per trace)", min=1, max=16)
    test_prompts: int = knob(512, "size of the held-out test prompt set", min=1)
    split_seed: int = knob(1, "seed choosing which prompts are held out", min=0)

    def __post_init__(self) -> None:
        if self.heterogeneity == "custom" and sum(self.custom_weights) <= 0:
            raise ConfigError("custom_weights: must have a positive sum")
        if self.test_prompts * 2 > self.vocab**self.prompt_len:
            raise ConfigError(f"test_prompts: {self.test_prompts} is more than half of the "
                              f"{self.vocab}^{self.prompt_len} possible prompts")
        if self.answer_len > self.horizon:
            raise ConfigError(f"answer_len: {self.answer_len} exceeds horizon {self.horizon}")


class PlantedTask:
    """Prompts, checker and teacher of the planted-subsequence task."""

    name = "planted"

    def __init__(self, cfg: PlantedConfig):
        self.cfg = cfg
        V, k, m = cfg.vocab, cfg.prompt_len, cfg.answer_len
        g = torch.Generator().manual_seed(cfg.map_seed)
        # p(j): which prompt position feeds target position j (a permutation when m <= k).
        perm = torch.randperm(k, generator=g)
        self.positions = torch.cat([perm, torch.randint(k, (max(0, m - k),), generator=g)])[:m]
        self.offsets = torch.randint(V, (m,), generator=g)
        n_fill = cfg.filler_tokens * cfg.styles
        self.filler_base = V
        self.bos, self.sep, self.eos, self.pad = V + n_fill, V + n_fill + 1, V + n_fill + 2, V + n_fill + 3
        self.vocab_size = V + n_fill + 4
        # Held-out prompts: a fixed random subset of all V^k prompt ids.
        self._n_ids = V**k
        gs = torch.Generator().manual_seed(cfg.split_seed)
        self._test_ids = torch.randperm(self._n_ids, generator=gs)[: cfg.test_prompts] if self._n_ids <= 2**24 \
            else torch.randint(self._n_ids, (cfg.test_prompts,), generator=gs)

    # ---- prompts -------------------------------------------------------------------------
    def _ids_to_prompts(self, ids: torch.Tensor) -> torch.Tensor:
        V, k = self.cfg.vocab, self.cfg.prompt_len
        powers = V ** torch.arange(k - 1, -1, -1)
        return (ids[:, None] // powers) % V

    def _prompts_to_ids(self, prompts: torch.Tensor) -> torch.Tensor:
        V, k = self.cfg.vocab, self.cfg.prompt_len
        return (prompts * V ** torch.arange(k - 1, -1, -1)).sum(1)

    def prompts(self, split: str, n: int, seed: int) -> torch.Tensor:
        """(n, k) int64 prompts. "test" draws from the held-out set; "train" never does."""
        g = torch.Generator().manual_seed(seed)
        if split == "test":
            idx = torch.randint(len(self._test_ids), (n,), generator=g) if n > len(self._test_ids) \
                else torch.randperm(len(self._test_ids), generator=g)[:n]
            return self._ids_to_prompts(self._test_ids[idx])
        if split != "train":
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        out = torch.empty(0, dtype=torch.long)
        held = self._test_ids
        while len(out) < n:  # rejection of held-out ids; the held-out share is <= 1/2
            ids = torch.randint(self._n_ids, (2 * (n - len(out)) + 8,), generator=g)
            out = torch.cat([out, ids[~torch.isin(ids, held)]])
        return self._ids_to_prompts(out[:n])

    def validation_prompts(self, exclude: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        """(n, k) training-split prompts that are not among the (B, k) `exclude` prompts: a
        learner's validation set, disjoint from its training data and from the test set."""
        drawn = self.prompts("train", 2 * (n + len(exclude)), seed)
        keep = drawn[~torch.isin(self._prompts_to_ids(drawn), self._prompts_to_ids(exclude))][:n]
        if len(keep) < n:
            raise ValueError(f"only {len(keep)} validation prompts outside the training set, {n} wanted")
        return keep

    def expert_traces(self, prompts: torch.Tensor, seed: int, homogeneous: bool = False) -> Rollouts:
        """One expert trace per prompt at the task horizon (the data VF clones)."""
        return self.expert(prompts, torch.Generator().manual_seed(seed), homogeneous=homogeneous)

    def target(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B, m) the hidden target y*(x) for (B, k) prompts."""
        return (prompts[:, self.positions] + self.offsets) % self.cfg.vocab

    def encode(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B, k+2) model input `BOS x SEP`."""
        B = prompts.shape[0]
        return torch.cat([torch.full((B, 1), self.bos), prompts, torch.full((B, 1), self.sep)], 1)

    # ---- checker -------------------------------------------------------------------------
    def first_success(self, prompts: torch.Tensor, traces: torch.Tensor) -> torch.Tensor:
        """(B,) T for (B, L) trace tokens: 1-based index of the last token of the first
        contiguous occurrence of the target, NEVER if none. Vectorised over all windows."""
        m = self.cfg.answer_len
        B, L = traces.shape
        if L < m:
            return torch.full((B,), NEVER, dtype=torch.long)
        windows = traces.unfold(1, m, 1)  # (B, L-m+1, m)
        hit = (windows == self.target(prompts)[:, None, :]).all(-1)  # (B, L-m+1)
        first = hit.int().argmax(1)  # first True (0 when none; disambiguated by any())
        return torch.where(hit.any(1), first + m, torch.full_like(first, NEVER))

    def check(self, prompts: torch.Tensor, rollouts: Rollouts) -> torch.Tensor:
        """Task protocol: T of each rollout; tokens outside the sampled mask never count."""
        return self.first_success(prompts, torch.where(rollouts.mask, rollouts.tokens, -1))

    def answer_keys(self, prompts: torch.Tensor, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor]:
        """Task protocol: the answer a trace counts for -> answers (B, m), valid (B,).

        A trace the checker credits (the target appears in it, first at T) answers the target:
        that occurrence is what counts as correct, wherever later candidates go. Any other trace
        answers its last m sampled content tokens, its final candidate (valid False when it
        holds fewer than m content tokens). So a vote never splits a correct trace's credit."""
        m, tokens = self.cfg.answer_len, rollouts.tokens  # tokens (B, L)
        content = (tokens < self.cfg.vocab) & rollouts.mask  # content ids are 0..V-1
        from_end = content.flip(-1).cumsum(-1).flip(-1)  # 1 at the last content token, 2 before it, ...
        keep = content & (from_end <= m)
        slot = torch.where(keep, m - from_end, m)  # answer position; m is a discard column
        last = torch.zeros(tokens.shape[0], m + 1, dtype=tokens.dtype).scatter(-1, slot, tokens)[:, :m]
        credited = self.check(prompts, rollouts) != NEVER  # (B,)
        answers = torch.where(credited[:, None], self.target(prompts), last)
        return answers, credited | (content.sum(-1) >= m)

    # ---- teacher -------------------------------------------------------------------------
    def filler_weights(self, budget: int | None = None) -> torch.Tensor:
        """Probability of each filler length l = 0, 1, ... per attempt at budget H."""
        cfg = self.cfg
        H = budget or cfg.horizon
        if cfg.heterogeneity == "none":
            w = torch.zeros(cfg.fixed_filler + 1)
            w[cfg.fixed_filler] = 1.0
        elif cfg.heterogeneity in ("low", "high"):
            scale = cfg.low_scale if cfg.heterogeneity == "low" else cfg.spread_scale
            w = torch.ones(int(math.floor(scale * H**cfg.spread_exponent)) + 1)
        else:
            w = torch.tensor(cfg.custom_weights, dtype=torch.float)
        return w / w.sum()

    def teacher(self, prompts: torch.Tensor, generator: torch.Generator, *, budget: int | None = None,
                homogeneous: bool = False, q: float | None = None, spread_at: int | None = None) -> Rollouts:
        """Teacher traces (B, H): attempts of filler + candidate, EOS right after the target first
        appears. `q` overrides cfg.q (the expert uses expert_q); `spread_at` draws the filler
        lengths as at that budget instead of H (pretraining's budget mix).

        homogeneous=True is the control expert: no filler and always correct (T = m, sigma = 0).
        Built position by position without a per-token Python loop: attempt a occupies
        [start_a, end_a); each output position looks up its attempt with searchsorted.
        """
        cfg = self.cfg
        H, m, B = budget or cfg.horizon, cfg.answer_len, prompts.shape[0]
        A = H // m + 1  # enough attempts to fill the budget even with zero filler
        if homogeneous:
            fill = torch.zeros(B, A, dtype=torch.long)
            correct = torch.ones(B, A, dtype=torch.bool)
        else:
            fill = torch.multinomial(self.filler_weights(spread_at or H), B * A, replacement=True, generator=generator).view(B, A)
            correct = torch.rand(B, A, generator=generator) < (cfg.q if q is None else q)
        cand = self.target(prompts)[:, None, :].repeat(1, A, 1)  # (B, A, m)
        # Corrupt wrong candidates: shift `corrupt_positions` random positions by a nonzero amount.
        scores = torch.rand(B, A, m, generator=generator)
        pos = scores.argsort(-1)[..., : min(cfg.corrupt_positions, m)]
        shift = torch.randint(1, cfg.vocab, pos.shape, generator=generator)
        corrupted = cand.scatter(-1, pos, (cand.gather(-1, pos) + shift) % cfg.vocab)
        cand = torch.where(correct[..., None], cand, corrupted)
        ends = (fill + m).cumsum(1)  # (B, A) exclusive end of each attempt
        starts = ends - fill - m
        p = torch.arange(H).expand(B, H).contiguous()
        att = torch.searchsorted(ends, p, right=True).clamp(max=A - 1)  # (B, H) attempt of position
        off = p - starts.gather(1, att)
        att_fill = fill.gather(1, att)
        style = torch.randint(cfg.styles, (B, 1), generator=generator)
        filler = self.filler_base + style * cfg.filler_tokens + torch.randint(
            cfg.filler_tokens, (B, H), generator=generator)
        cand_tok = cand.gather(1, att[..., None].expand(B, H, m)).gather(
            2, (off - att_fill).clamp(0, m - 1)[..., None]).squeeze(-1)
        tokens = torch.where(off < att_fill, filler, cand_tok)
        # The teacher stops right after the target first appears (T from the checker, which also
        # catches a target spelled across two adjacent candidates): EOS there, PAD after.
        stop = self.first_success(prompts, tokens).clamp(max=H)  # (B,) tokens before EOS
        tokens = torch.where(p == stop[:, None], self.eos, tokens)
        tokens = torch.where(p > stop[:, None], self.pad, tokens)
        counts = (stop + 1).clamp(max=H)
        mask = p < counts[:, None]
        return Rollouts(tokens=tokens, mask=mask, counts=counts)

    def expert(self, prompts: torch.Tensor, generator: torch.Generator, *, budget: int | None = None,
               homogeneous: bool = False, max_rounds: int = 100) -> Rollouts:
        """Expert traces: teacher traces with candidates right w.p. expert_q, conditioned on success
        within the budget (rejection)."""
        H = budget or self.cfg.horizon
        B = prompts.shape[0]
        q = self.cfg.expert_q
        out = self.teacher(prompts, generator, budget=H, homogeneous=homogeneous, q=q)
        ok = self.check(prompts, out) <= H
        for _ in range(max_rounds):
            if ok.all():
                return out
            redo = self.teacher(prompts[~ok], generator, budget=H, homogeneous=homogeneous, q=q)
            idx = (~ok).nonzero().squeeze(1)
            for name in ("tokens", "mask", "counts"):
                getattr(out, name)[idx] = getattr(redo, name)
            ok[idx] = self.check(prompts[idx], redo) <= H
        raise RuntimeError(f"teacher succeeded on only {int(ok.sum())}/{B} prompts within H={H} after "
                           f"{max_rounds} rounds: raise expert_q or the budget")


class ExpertSampler:
    """The planted task's expert process (teacher with expert_q, conditioned on success within
    the budget) behind the `Sampler` interface, so it is evaluated exactly like a policy.
    It writes its traces directly; temperature does not apply to it."""

    def __init__(self, task: PlantedTask):
        self.task = task

    def sample(self, prompts: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
               seed: int = 0) -> Rollouts:
        return self.task.expert(prompts, torch.Generator().manual_seed(seed), budget=max_new_tokens)
