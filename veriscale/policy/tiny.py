"""The tiny GPT of the planted task behind the `Policy` interface (policy/base.py).

A tiny-GPT run directory holds `model.safetensors`, `config.json` (the `GPTConfig`) and
`veriscale.json` (policy "gpt", the stage, the planted task's config, the run's config and the
weights' digest): the policy carries its own task, so every learner and evaluation reads the
prompts, checker and horizon from the run directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from veriscale.atomic import write_json_atomic
from veriscale.config import ConfigError, from_dict, to_dict
from veriscale.policy.base import PolicyError, check_weights, write_meta
from veriscale.policy.engine import generate
from veriscale.policy.gpt import GPT, GPTConfig
from veriscale.tasks.base import Rollouts, id_rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask

MODEL_CONFIG = "config.json"


class GPTPolicy:
    """A tiny GPT and its planted task; prompts are (B, k) content tokens."""

    kind = "gpt"
    text = False

    def __init__(self, model: GPT, task: PlantedTask, spec: str = "", top_k: int = 0):
        self.model, self.task, self.spec, self.top_k = model, task, spec, top_k
        self.pad_id, self.eos_id = task.pad, task.eos
        self.hidden_size = model.cfg.d_model

    @property
    def horizon(self) -> int:
        """The planted task's horizon: the context holds `BOS x SEP` and at most that many tokens."""
        return self.task.cfg.horizon

    def encode_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B, k) prompts -> (B, k+2) `BOS x SEP`."""
        return self.task.encode(prompts)

    def encode_completion(self, text: str) -> list[int]:
        raise ValueError("the tiny GPT reads token ids, not text: its expert traces come from the planted task")

    def decode(self, ids: list[int]) -> str:
        raise ValueError("the tiny GPT writes token ids, not text: its traces are read by the planted task's checker")

    def sample(self, prompts: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, seed: int = 0,
               generator: torch.Generator | None = None, forcing: Any = None, capture: int = 0) -> Rollouts:
        """KV-cache sampling (policy/engine.py); `capture` is unused: nothing below the top is
        frozen (`top_blocks`)."""
        if forcing is not None:
            raise ValueError("budget forcing edits text decoding; the tiny GPT has no answer cue to force")
        self.model.eval()
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        return generate(self.model, self.task.encode(prompts), max_new_tokens, eos_id=self.task.eos,
                        pad_id=self.task.pad, temperature=temperature, top_k=self.top_k, generator=g)

    def rollouts(self, rows: list[list[int]], width: int) -> Rollouts:
        """Rollouts of stored token id rows (a study's draws and samples)."""
        return id_rollouts(rows, width, self.pad_id)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.body(ids)

    def train_top(self, blocks: int) -> None:
        """Train only the top `blocks` blocks, the final norm and the head (0 = all). The head
        is tied to the token embedding, so the embedding trains with it."""
        if blocks <= 0:
            return
        if blocks > len(self.model.blocks):
            raise ValueError(f"train_layers={blocks} but the model has {len(self.model.blocks)} blocks")
        if self.model.pos is not None:
            self.model.pos.requires_grad_(False)
        for block in self.model.blocks[:len(self.model.blocks) - blocks]:
            block.requires_grad_(False)

    @property
    def head(self) -> torch.nn.Module:
        """(..., d) final hidden states -> (..., V) logits (tied to the token embedding)."""
        return self.model.head

    def top_blocks(self, frozen: int | None = None) -> None:
        """No split: the head is tied to the token embedding, which trains with it, so nothing
        below the top blocks stays fixed (learners run the whole network)."""
        return None

    def add_lora(self, r: int, alpha: int, dropout: float, targets: list[str]) -> None:
        raise ValueError("lora_r: LoRA adapts a transformers policy; the tiny GPT trains its own weights (lora_r = 0)")

    def reinitialise(self, seed: int) -> None:
        """Fresh weights of the same architecture (SFT from scratch)."""
        torch.manual_seed(seed)
        self.model = GPT(self.model.cfg)

    def frozen_copy(self) -> "GPTPolicy":
        return GPTPolicy(copy.deepcopy(self.model).eval().requires_grad_(False), self.task, self.spec, self.top_k)

    def save(self, out: str | Path, meta: dict[str, Any]) -> Path:
        return save_gpt(out, self.model, {**meta, "task": to_dict(self.task.cfg)})


def resolve_model_config(model: GPTConfig, task: PlantedTask) -> GPTConfig:
    """Fill vocab_size / max_seq_len left at 0 from the task (prompt BOS x SEP + horizon)."""
    vocab = model.vocab_size or task.vocab_size
    seq = model.max_seq_len or task.cfg.prompt_len + 2 + task.cfg.horizon
    return dataclasses.replace(model, vocab_size=vocab, max_seq_len=seq)


def save_gpt(out: str | Path, module: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write `module`'s weights (safetensors; tied weights stored once), the GPTConfig and
    veriscale.json (meta + digest), weights first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.safetensors.tmp"
    save_model(module, str(tmp))
    tmp.replace(out / "model.safetensors")
    write_json_atomic(out / MODEL_CONFIG, to_dict(module.cfg))
    write_meta(out, {**meta, "policy": "gpt"})
    return out


def load_gpt(run_dir: Path, meta: dict[str, Any]) -> GPTPolicy:
    """The GPTPolicy of a tiny-GPT run directory, or PolicyError naming what is wrong."""
    weights = check_weights(run_dir, meta)
    try:
        task = PlantedTask(from_dict(PlantedConfig, meta["task"]))
        model = GPT(from_dict(GPTConfig, json.loads((run_dir / MODEL_CONFIG).read_text())))
    except (KeyError, OSError, ValueError, ConfigError) as e:
        raise PolicyError(f"{run_dir}: damaged run configuration ({type(e).__name__}: {e})") from None
    load_weights(weights, model)
    return GPTPolicy(model.eval(), task, str(run_dir))


def load_weights(path: Path, module: torch.nn.Module) -> None:
    """Load safetensors weights into `module` (strict), or PolicyError."""
    try:
        load_model(module, str(path), strict=True)
    except (SafetensorError, RuntimeError, OSError, ValueError) as e:
        raise PolicyError(f"{path}: unreadable weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
