"""Any transformers causal LM as a `Policy` (policy/base.py), sampled by transformers on CPU or
GPU, or by vLLM on a GPU (`sampler = "vllm"`, policy/vllm.py).

`HFSampler` (policy/hf_sampler.py) samples it: batched KV-cache decoding with continuous batching.

`HFPolicy` holds the model, its tokenizer and a sampler. Training rows use the sampler's prompt
encoding, so a learner trains on exactly what sampling reads. Nothing is fetched from the model
hub: only local directories load (`policy/load.py`).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError

from veriscale.policy.base import PolicyError, no_weights, write_meta
from veriscale.policy.forcing import BudgetForcing, forced_sample
from veriscale.policy.hf_sampler import HFSampler
from veriscale.policy.text import HFConfig, text_rollouts
from veriscale.policy.vllm import VLLMSampler
from veriscale.tasks.base import Rollouts


class HFPolicy:
    """A transformers causal LM behind the `Policy` interface. `sampler` is the object that
    samples (an `HFSampler` over this model, or a `VLLMSampler` reading the same directory);
    with vLLM the torch model loads only when a learner asks for it (`model`)."""

    kind = "hf"
    task = None  # it works on any text task
    text = True
    horizon = None  # budgets are bounded by the caller, not by the policy

    def __init__(self, spec: str, path: Path | None, tokenizer, cfg: HFConfig, *, model=None, sampler=None):
        self.spec, self.path, self.tok, self.cfg = spec, path, tokenizer, cfg
        self._model = model
        self.sampler = sampler if sampler is not None else HFSampler(self.model, tokenizer, cfg)
        self.pad_id, self.eos_id = self.sampler.pad_id, int(self.sampler.eos_ids[0])
        if tokenizer.eos_token_id is not None:  # the EOS a completion ends with when trained on
            self.eos_id = tokenizer.eos_token_id
        self.lora = False
        self.frozen_blocks = 0  # lower decoder blocks that train_top froze
        self._head_checked = False

    @property
    def model(self):
        if self._model is None:
            self._model = load_lm(self.path, self.cfg.dtype)
        return self._model

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def encode_prompts(self, prompts: Sequence[Any]) -> list[list[int]]:
        return [self.sampler.encode(p) for p in prompts]

    def encode_completion(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids + [self.eos_id]

    def decode(self, ids: list[int]) -> str:
        """A trace's text without special tokens (an EOS never sits inside a joined trace)."""
        return self.tok.decode(ids, skip_special_tokens=True).strip()

    def sample(self, prompts: Sequence[Any], max_new_tokens: int, *, temperature: float = 1.0, seed: int = 0,
               generator: torch.Generator | None = None, forcing: BudgetForcing | None = None,
               capture: int = 0) -> Rollouts:
        """Plain sampling, or s1-style budget forcing at H = max_new_tokens (policy/forcing.py);
        `capture` = k keeps the hidden states after k blocks where the sampler can (`Rollouts.features`)."""
        if self._model is not None and isinstance(self.sampler, HFSampler):
            self.sampler.model = self._model.eval()  # a learner may have replaced the model (LoRA merge)
        if forcing is not None:
            return forced_sample(self.sampler, prompts, max_new_tokens, forcing, temperature=temperature, seed=seed,
                                 generator=generator)
        return self.sampler.sample(prompts, max_new_tokens, temperature=temperature, seed=seed, generator=generator,
                                   capture=capture)

    def rollouts(self, rows: list[list[int]], width: int) -> Rollouts:
        """Rollouts of stored token id rows, with their texts and offsets (a study's draws)."""
        return text_rollouts(self.tok, rows, width, self.pad_id)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        model = self.model.get_base_model() if self.lora else self.model  # under peft, its wrapped model
        return model.base_model(input_ids=ids, use_cache=False).last_hidden_state

    @property
    def head(self) -> torch.nn.Module:
        """The output layer, (..., d) final hidden states -> (..., V) logits. Checked once
        against the full forward: a model that post-processes its logits (e.g. soft-capping)
        is refused rather than trained on different logits than it samples from."""
        head = self.model.get_output_embeddings()
        if not self._head_checked:
            probe = torch.arange(1, 9)[None] % self.model.config.vocab_size  # (1, 8)
            with torch.no_grad():
                same = torch.allclose(head(self.hidden(probe)), self.logits(probe), atol=1e-4, rtol=1e-4)
            if not same:
                raise PolicyError(f"{self.spec}: the model's logits are not its output layer applied to its final "
                                  f"hidden states; the RL learner cannot train it")
            self._head_checked = True
        return head

    def train_top(self, blocks: int) -> None:
        """Train only the top `blocks` decoder blocks, the final norm and the head (0 = all):
        frozen lower blocks need no backward pass, most of the cost of a 30-layer model on a CPU."""
        if blocks <= 0:
            return
        body = self.model.base_model
        layers = body.layers
        if blocks > len(layers):
            raise ValueError(f"train_layers={blocks} but the model has {len(layers)} blocks")
        body.embed_tokens.requires_grad_(False)
        for block in layers[:len(layers) - blocks]:
            block.requires_grad_(False)
        self.frozen_blocks = len(layers) - blocks

    def top_blocks(self, frozen: int | None = None) -> "TopBlocks | None":
        """The model split after its frozen lower blocks (`train_top`; or `frozen` of them, for
        a reference copy), or None when nothing below the top is frozen (all blocks train, or
        LoRA adapts every block) or the split does not reproduce the full forward."""
        frozen = self.frozen_blocks if frozen is None else frozen
        if frozen <= 0 or self.lora:
            return None
        return TopBlocks.checked(self.model, frozen)

    def add_lora(self, r: int, alpha: int, dropout: float, targets: list[str]) -> None:
        """Train LoRA adapters (peft) on `targets` instead of the weights; merged on save."""
        from peft import LoraConfig, get_peft_model

        self._model = get_peft_model(self.model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                            target_modules=list(targets), task_type="CAUSAL_LM"))
        self.lora = True

    def reinitialise(self, seed: int) -> None:
        """Fresh weights of the same architecture (SFT from scratch)."""
        torch.manual_seed(seed)
        self._model = type(self.model)(self.model.config)
        if isinstance(self.sampler, HFSampler):  # it samples the new weights, not the old ones
            self.sampler.model = self._model

    def frozen_copy(self) -> "HFPolicy":
        model = copy.deepcopy(self.model).eval().requires_grad_(False)
        return HFPolicy(self.spec, self.path, self.tok, self.cfg, model=model)

    def save(self, out: str | Path, meta: dict[str, Any]) -> Path:
        """A transformers directory (safetensors) with veriscale.json; LoRA adapters are merged
        first, so the directory is a plain model."""
        if self.lora:
            self._model, self.lora = self.model.merge_and_unload(), False
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tok.save_pretrained(out)
        write_meta(out, {**meta, "policy": "hf"})
        return out


class TopBlocks:
    """A decoder-only transformers model cut after its lower `frozen` blocks, which never train:
    `features(ids)` runs the embedding and those blocks once, without autograd, and
    `hidden(h)`/`logits(h)` run the top blocks, final norm and head on them. A learner that
    caches the features (SFT and the verifier reread the same rows every epoch) or shares them
    (RL: the policy and its reference have the same frozen blocks) skips most of the forward.

    It reruns the model's own forward with its block list swapped (`inputs_embeds` carries the
    features into the top), so masks and rotary positions are the model's. A model whose blocks
    attend differently by position (Gemma 3: sliding-window or global attention, chosen by
    `config.layer_types[i]` for the i-th block the forward runs) has that list sliced with the
    blocks, so each block keeps its own mask and rotary embedding. `checked` compares the two
    halves with the full forward once and refuses a model where they differ (e.g. one that
    rescales `inputs_embeds`), saying so once."""

    def __init__(self, model, frozen: int):
        self.model, self.frozen = model, frozen
        self.body = model.base_model

    @classmethod
    def checked(cls, model, frozen: int) -> "TopBlocks | None":
        body = getattr(model, "base_model", None)
        if not all(hasattr(body, a) for a in ("embed_tokens", "layers", "norm")):
            slow_path(f"{type(model).__name__} has no embed_tokens / layers / norm to split at")
            return None
        top = cls(model, frozen)
        probe = torch.arange(1, 9)[None] % model.config.vocab_size  # (1, 8)
        with torch.no_grad():
            full, split = model(input_ids=probe, use_cache=False).logits, top.logits(top.features(probe))
        if not torch.allclose(full, split, atol=1e-4, rtol=1e-4):
            slow_path(f"{type(model).__name__} cut after {frozen} blocks does not reproduce its full forward")
            return None
        return top

    def _run(self, start: int, stop: int | None, norm, **inputs) -> torch.Tensor:
        """The body's forward over its blocks [start:stop] then `norm`; (N, S, d)."""
        cfg, full_blocks, full_norm = self.body.config, self.body.layers, self.body.norm
        types = getattr(cfg, "layer_types", None)
        self.body.layers, self.body.norm = torch.nn.ModuleList(full_blocks[start:stop]), norm
        if types is not None:
            cfg.layer_types = types[start:stop]
        try:
            return self.body(**inputs, use_cache=False).last_hidden_state
        finally:
            self.body.layers, self.body.norm = full_blocks, full_norm
            if types is not None:
                cfg.layer_types = types

    @torch.no_grad()
    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, S) right-padded ids -> (N, S, d) hidden states after the frozen blocks."""
        return self._run(0, self.frozen, torch.nn.Identity(), input_ids=ids)

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """(N, S, d) features -> (N, S, d) final hidden states (after the final norm)."""
        return self._run(self.frozen, None, self.body.norm, inputs_embeds=h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(N, S, d) features -> (N, S, V) next-token logits."""
        return self.model.get_output_embeddings()(self.hidden(h))


def slow_path(why: str) -> None:
    """Say once (per reason) that a frozen trunk (train_layers) saves only its backward pass here:
    its features cannot be computed once and reused."""
    warnings.warn(f"{why}: the frozen blocks run forward at every training step", stacklevel=3)


def load_lm(path: Path, dtype: str):
    """The transformers model of a local directory, or PolicyError naming what is wrong."""
    from transformers import AutoModelForCausalLM

    if not any(Path(path).glob("*.safetensors")):
        no_weights(Path(path), "*.safetensors weights")
    try:  # use_safetensors: never fall back to a pickle-based file
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                    dtype=getattr(torch, dtype)).eval()
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise PolicyError(f"{path}: cannot load the transformers model ({first_line(e)})") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load_hf(spec: str, path: Path, cfg: HFConfig | None = None, sampler: str = "hf") -> HFPolicy:
    """An HFPolicy for a local transformers directory (config.json, weights, tokenizer)."""
    from transformers import AutoTokenizer

    cfg = cfg or HFConfig()
    if not (path / "config.json").is_file():
        raise PolicyError(f"{path}: not a transformers model directory (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise PolicyError(f"{path}: cannot load the tokenizer ({first_line(e)})") from None
    if sampler == "vllm":
        return HFPolicy(spec, path, tokenizer, cfg, sampler=VLLMSampler(path, cfg))
    return HFPolicy(spec, path, tokenizer, cfg, model=load_lm(path, cfg.dtype))
