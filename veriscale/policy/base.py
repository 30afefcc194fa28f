"""The `Policy` interface every learner, search and evaluation is written against, and the one
run-directory format every trained policy is saved in.

A policy is a causal language model over token ids with what the algorithms need of it:
- `encode_prompts(prompts)`: prompt token ids, exactly as sampling feeds them (the planted task's
  `BOS x SEP`, or a chat template), a (B, P) tensor or a list of id lists;
- `encode_completion(text)`: a text completion's ids, EOS appended (text policies only);
- `sample(prompts, H, temperature=, seed=, generator=, forcing=, capture=)`: `Rollouts` of at most
  H tokens per prompt (budget forcing is a sampling option of text policies, `policy/forcing.py`;
  `capture` keeps the frozen trunk's hidden states for RL where the sampler can);
- `rollouts(rows, width)`: stored id rows back as `Rollouts` (with texts for text policies);
- `logits(ids)` (N, S) -> (N, S, V) and `hidden(ids)` (N, S) -> (N, S, d): the network, for the
  training losses and for a verifier's scalar head; `head`, the output layer (logits =
  head(hidden)), so a loss can compute logits only where it reads them;
- `train_top(k)`: only the top k blocks train (0 = all); `top_blocks()`: the network cut after
  its frozen lower blocks (features computed once, then the top; None where nothing is frozen);
  `frozen_copy()`: a reference for KL;
  `reinitialise(seed)`: fresh weights of the same architecture;
- `add_lora(r, alpha, dropout, targets)`: train LoRA adapters instead of the weights;
- `save(out, meta)`: the run directory.
What a command or learner may ask of a policy before it does any work: `task`, the task the
policy carries (the tiny GPT's planted task; None for a text policy, which works on any text
task), `horizon`, the largest budget it can sample (None: unbounded), and `text`: it reads and
writes text, so `decode(ids)` (search traces join decoded attempts), `encode_completion` and
budget forcing apply. Where an operation does not apply (text on the tiny GPT, LoRA on the tiny
GPT), it raises a one-line ValueError.

Two implementations: `policy/tiny.py` (the tiny GPT with its KV-cache engine, for the planted
task) and `policy/hf.py` (any transformers causal LM, sampled by transformers or vLLM).
`policy/load.py: load_policy(spec)` reads a run directory, `hf:PATH` or `smollm2`.

Run directory (both kinds): the weights as `model.safetensors` (never pickle), the model's own
`config.json` (a `GPTConfig`, or a transformers config with tokenizer files beside it), and
`veriscale.json`, our metadata: `policy` ("gpt" | "hf"), `stage` (pretrain, sft, verifier, rl),
the task and run configs, and `weights_sha256`, the digest of model.safetensors, checked on load.
A verifier's run directory is its body's run directory plus `value_head.safetensors`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from veriscale.atomic import write_json_atomic
from veriscale.tasks.base import Rollouts, Task

META = "veriscale.json"
WEIGHTS = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class PolicyError(ValueError):
    """A policy spec or run directory cannot be loaded; the message is one line naming the path
    and what is wrong (missing, truncated, corrupted, pickle-only, or of the wrong kind)."""


@runtime_checkable
class Policy(Protocol):
    kind: str  # "gpt" | "hf"
    spec: str  # what it was loaded from (a run directory, hf:PATH, smollm2)
    model: torch.nn.Module  # the network whose parameters train
    pad_id: int
    eos_id: int
    hidden_size: int
    task: Task | None  # the task the policy carries (the tiny GPT's planted task); None: any text task
    text: bool  # reads and writes text: decode, encode_completion and budget forcing apply

    @property
    def horizon(self) -> int | None:
        """The largest budget H it can sample (the tiny GPT's context), None when unbounded."""

    def encode_prompts(self, prompts: Any) -> torch.Tensor | list[list[int]]:
        """Prompt ids as sampling feeds them: a (B, P) tensor or B id lists."""

    def encode_completion(self, text: str) -> list[int]:
        """A text completion's token ids, EOS appended (text policies only)."""

    def decode(self, ids: list[int]) -> str:
        """A trace's text without special tokens (text policies only)."""

    def sample(self, prompts: Any, max_new_tokens: int, *, temperature: float = 1.0, seed: int = 0,
               generator: torch.Generator | None = None, forcing: Any = None, capture: int = 0) -> Rollouts:
        """One rollout per prompt; `generator`, when given, is drawn from instead of `seed`;
        `capture` = k asks for the hidden states after k blocks (`Rollouts.features`)."""

    def rollouts(self, rows: list[list[int]], width: int) -> Rollouts:
        """Rollouts of stored token id rows (texts and offsets included for text policies)."""

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, S) right-padded ids -> (N, S, V) next-token logits."""

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, S) right-padded ids -> (N, S, hidden_size) final hidden states."""

    @property
    def head(self) -> torch.nn.Module:
        """The output layer: logits(ids) == head(hidden(ids))."""

    def train_top(self, blocks: int) -> None:
        """Only the top `blocks` decoder blocks (and what sits above them) train; 0 = all."""

    def top_blocks(self, frozen: int | None = None) -> Any:
        """After `train_top`, an object with `features(ids)` (N, S) -> (N, S, d) through the
        frozen lower blocks (or the lower `frozen` blocks) and `logits(h)` / `hidden(h)` through
        the rest; None when the policy cannot be split (nothing frozen)."""

    def add_lora(self, r: int, alpha: int, dropout: float, targets: list[str]) -> None:
        """Train LoRA adapters of rank r on the modules named `targets` instead of the weights
        (merged on save); then `top_blocks()` is None (the adapters sit in every block)."""

    def reinitialise(self, seed: int) -> None:
        """Fresh weights of the same architecture."""

    def frozen_copy(self) -> "Policy":
        """An independent copy with no trainable parameters (the KL reference of RL)."""

    def save(self, out: str | Path, meta: dict[str, Any]) -> Path:
        """Write the run directory `out`: weights, model config, veriscale.json with `meta`."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_meta(out: str | Path, meta: dict[str, Any]) -> None:
    """veriscale.json of a run directory whose weights are already written: `meta` plus the
    weights' digest."""
    out = Path(out)
    write_json_atomic(out / META, {**meta, "weights_sha256": sha256_file(out / WEIGHTS)})


def read_meta(run_dir: str | Path) -> dict[str, Any] | None:
    """The veriscale.json of a run directory, None when it has none (a plain model directory)."""
    path = Path(run_dir) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PolicyError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise PolicyError(f"{path}: expected a JSON object")
    return meta


def check_weights(run_dir: str | Path, meta: dict[str, Any] | None) -> Path:
    """The weights file of a run directory, after checking it exists, is safetensors (pickle-based
    formats are refused: loading them can execute code) and, for a run directory with `meta`,
    matches the digest recorded there (a run directory without one is refused)."""
    run_dir = Path(run_dir)
    path = run_dir / WEIGHTS
    if not path.is_file():
        no_weights(run_dir, WEIGHTS)
    if meta is None:  # a plain model directory: nothing recorded to check against
        return path
    want = meta.get("weights_sha256")
    if not want:  # veriscale writes it with every run directory: without it, damage would go unseen
        raise PolicyError(f"{run_dir / META}: no weights_sha256, so {WEIGHTS} cannot be verified (edited by "
                          "hand? train the run again)")
    if sha256_file(path) != want:
        raise PolicyError(f"{path}: digest differs from the one recorded in {META} (truncated or modified)")
    return path


def no_weights(run_dir: Path, wanted: str) -> None:
    """Raise the PolicyError of a directory without its safetensors weights, naming any
    pickle-based weight files found instead (refused: loading them can execute code)."""
    pickles = sorted(p.name for p in run_dir.glob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PolicyError(f"{run_dir}: no {wanted}, only {', '.join(pickles)} (pickle-based weights are refused: "
                          "loading them can execute code)")
    raise PolicyError(f"{run_dir}: no {wanted}")
