"""What every learner of a transformers causal LM shares: packed prompt + completion rows, a
logits-only view of the model for `loop.train_lm`, and run directories.

A training row is the prompt's token ids exactly as the sampler encodes them (chat template and
generation prompt included), followed by completion ids. Rows are right-padded: with causal
attention, padding after a row never changes its real positions, so no attention mask is needed
and position ids stay 0..len-1, as at sampling time.

A run directory is a transformers directory (config.json, model.safetensors, tokenizer files;
`save_pretrained` with safetensors, never pickle) plus `veriscale.json`, our own metadata (stage,
task, run config), so `policy.hf.load_hf_policy` loads every trained policy like the base one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from veriscale.policy.checkpoint import write_json_atomic

RUN_FILE = "veriscale.json"


def pack(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
         pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """seq (N, S) right-padded prompt + completion, starts (N,) prompt lengths (where the
    completion begins), lengths (N,) completion lengths."""
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    seq = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        seq[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    starts = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    lengths = torch.tensor([len(c) for c in completion_ids], dtype=torch.long)
    return seq, starts, lengths


def completion_batch(seq: torch.Tensor, starts: torch.Tensor,
                     lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token training on completions only: inputs (N, S-1), targets (N, S-1) and a loss mask
    (N, S-1) that is True exactly where the target is a completion token (prompt tokens and
    padding never carry loss)."""
    pos = torch.arange(1, seq.shape[1])[None]  # position of each target in seq
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    return seq[:, :-1], seq[:, 1:], mask


def prefix_positions(starts: torch.Tensor, lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(N, L) position in seq of the last token of each completion prefix h = 1..L; beyond a
    completion's end the whole completion is the prefix (its last position repeats), and an
    empty completion reads the prompt's last position."""
    h = torch.minimum(torch.arange(1, L + 1)[None], lengths[:, None])  # (N, L)
    return starts[:, None] + h - 1


class LogitsOf(nn.Module):
    """A causal LM seen as `(N, S) ids -> (N, S, V) logits`, the shape `loop.train_lm` and the RL
    loss expect."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, use_cache=False).logits


def freeze_below(lm: nn.Module, train_layers: int) -> None:
    """Train only the top `train_layers` decoder blocks, the final norm and what sits above
    (0 = train everything). Frozen lower blocks need no backward pass at all, which is most of
    the cost of a 30-layer model on a CPU."""
    if train_layers <= 0:
        return
    body = lm.base_model
    blocks = body.layers
    if train_layers > len(blocks):
        raise ValueError(f"train_layers={train_layers} but the model has {len(blocks)} blocks")
    body.embed_tokens.requires_grad_(False)
    for block in blocks[:len(blocks) - train_layers]:
        block.requires_grad_(False)


class TrainableSnapshot:
    """The best weights seen so far, kept in memory: `take()` copies every trainable parameter
    of `module` (the early-stopping save, for `loop.BestCheckpoint`), `restore()` writes the copy
    back before the run directory is saved once. Frozen parameters never change, so they are
    not copied."""

    def __init__(self, module: nn.Module):
        self.params = {k: p for k, p in module.named_parameters() if p.requires_grad}
        self.state: dict[str, torch.Tensor] = {}

    def take(self) -> None:
        self.state = {k: p.detach().clone() for k, p in self.params.items()}

    @torch.no_grad()
    def restore(self) -> None:
        for k, p in self.params.items():
            p.copy_(self.state[k])


def save_text_run(out: str | Path, lm, tokenizer, meta: dict[str, Any]) -> Path:
    """Write a transformers run directory (safetensors) and its veriscale metadata."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_json_atomic(out / RUN_FILE, meta)
    return out


def read_text_run(path: str | Path) -> dict[str, Any]:
    """The veriscale metadata of a run directory written by `save_text_run`."""
    f = Path(path) / RUN_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no {RUN_FILE}; not a veriscale LLM run directory")
    return json.loads(f.read_text())


def resolve_model(spec: str) -> Path:
    """A base model spec -> a local transformers directory: 'smollm2' is the offline
    SmolLM2-135M-Instruct cache (converted on first use), anything else a local path."""
    if spec == "smollm2":
        from veriscale.policy.smollm2 import ensure_converted

        return ensure_converted()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{spec}: not a local transformers model directory (no config.json); "
                                "models are never fetched from the hub")
    return path
