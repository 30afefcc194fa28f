"""Training rows from prompts and traces, the same for every policy.

A row is the prompt's ids exactly as the policy samples from them (`Policy.encode_prompts`),
followed by the trace's tokens, right-padded. With causal attention, padding after a row never
changes its real positions, so no attention mask is needed and position ids stay 0..len-1, as
at sampling time. Prompts of one length (the planted task) give the plain concatenation
`[prompt | trace]`; prompts of different lengths (chat templates) each start their trace where
they end.
"""

from __future__ import annotations

from typing import Sequence

import torch

from veriscale.tasks.base import Rollouts, id_lengths, padded_ids


def join(prompt_ids: torch.Tensor | Sequence[Sequence[int]], rollouts: Rollouts,
         pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """seq (N, P_max + L) prompt then trace then padding, starts (N,) where each trace begins,
    lengths (N,) trace lengths (= rollouts.counts); L is the rollouts' width."""
    N, L = rollouts.tokens.shape
    trace = torch.where(torch.arange(L)[None] < rollouts.counts[:, None], rollouts.tokens, pad_id)  # (N, L)
    starts = id_lengths(prompt_ids)  # (N,)
    seq = torch.cat([padded_ids(prompt_ids, pad_id), torch.full((N, L), pad_id, dtype=torch.long)], 1)
    # each trace (with its padding) right where its prompt ends: columns starts .. starts + L - 1
    seq.scatter_(1, starts[:, None] + torch.arange(L)[None], trace)
    return seq, starts, rollouts.counts.clone()


def lm_rows(prompt_ids: torch.Tensor | Sequence[Sequence[int]], rollouts: Rollouts,
            pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token training on traces only: inputs (N, S-1), targets (N, S-1) and a loss mask
    (N, S-1), True exactly where the target is a trace token (prompt and padding never are)."""
    seq, starts, lengths = join(prompt_ids, rollouts, pad_id)
    pos = torch.arange(1, seq.shape[1])[None]  # position of each target in seq
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    return seq[:, :-1], seq[:, 1:], mask


def prefix_positions(starts: torch.Tensor, lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(N, L) position in seq of the last token of each trace prefix h = 1..L; beyond a trace's
    end the whole trace is the prefix (its last position repeats), and an empty trace reads the
    prompt's last position."""
    h = torch.minimum(torch.arange(1, L + 1)[None], lengths[:, None])  # (N, L)
    return starts[:, None] + h - 1


def prefix_labels(T: torch.Tensor, L: int) -> torch.Tensor:
    """(B, L) float bi-level reward y_h = 1{h >= T} for h = 1..L, from (B,) first-success T."""
    return (torch.arange(1, L + 1)[None] >= T[:, None]).float()
