"""A small decoder-only transformer (pre-LayerNorm GPT). No training or sampling code lives here.

`body` returns final hidden states, `forward` the next-token logits; both accept a `KVCache` so
the engine can prefill once and then feed one token per step. The verifier reuses `body` with
its own scalar head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from veriscale.config import ConfigError, knob


@dataclass
class GPTConfig:
    vocab_size: int = knob(0, "tokens in the vocabulary (0 = take it from the task)", min=0)
    max_seq_len: int = knob(0, "positions (0 = prompt length + task horizon)", min=0)
    n_layer: int = knob(4, "transformer blocks", min=1, max=64)
    n_head: int = knob(4, "attention heads", min=1, max=64)
    d_model: int = knob(64, "residual width (divisible by n_head)", min=8, max=8192)
    position: Literal["both", "rope", "learned"] = knob(
        "both", "positions: learned absolute embeddings, rotary (relative offsets: 'the token k back' is the "
                "same at every position), or both (ours: BENCHMARKS.md measures what each learns at long horizons)")

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ConfigError(f"d_model: {self.d_model} is not divisible by n_head={self.n_head}")
        if self.position != "learned" and (self.d_model // self.n_head) % 2:
            raise ConfigError(f"d_model: rotary positions need an even head size, got {self.d_model // self.n_head}")


def rotary_tables(max_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (max_len, head_dim/2) of rotary position embeddings."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    ang = torch.arange(max_len, dtype=torch.float32)[:, None] * inv[None]  # (max_len, hd/2)
    return ang.cos(), ang.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :hd/2], x[..., hd/2:]) of (B, nh, T, hd) by (T, hd/2) angles."""
    a, b = x.chunk(2, -1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class KVCache:
    """Preallocated keys/values, (n_layer, B, n_head, max_len, head_dim) each; `pos` tokens filled."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device=None, dtype=torch.float32):
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` of the batch (the engine drops finished sequences)."""
        self.k = self.k[:, rows]
        self.v = self.v[:, rows]


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.layer, self.n_head = layer, cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.out = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, cache: KVCache | None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        if rope is not None:  # (T, hd/2) cos/sin of this chunk's positions; cached keys are stored rotated
            q, k = rotate(q, *rope), rotate(k, *rope)
        if cache is not None:  # write this chunk's keys/values, attend over everything so far
            p = cache.pos
            cache.k[self.layer, :, :, p:p + T] = k
            cache.v[self.layer, :, :, p:p + T] = v
            k, v = cache.k[self.layer, :, :, :p + T], cache.v[self.layer, :, :, :p + T]
        # q: (B, nh, T, hd); k, v: (B, nh, S, hd). A causal mask is needed only when T > 1; the
        # cached prefix (S - T positions) is fully visible, which is_causal handles for S == T.
        if T > 1 and k.shape[2] != T:
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.vocab_size < 1 or cfg.max_seq_len < 1:
            raise ConfigError("vocab_size/max_seq_len: must be resolved (> 0) before building the model")
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position != "rope" else None
        if cfg.position != "learned":
            cos, sin = rotary_tables(cfg.max_seq_len, cfg.d_model // cfg.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied input/output embeddings
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.tok.weight
        return KVCache(self.cfg, batch, max_len, device=p.device, dtype=p.dtype)

    def body(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d_model) final hidden states (after ln_f)."""
        start = cache.pos if cache is not None else 0
        T = idx.shape[1]
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        x = self.tok(idx)
        if self.pos is not None:
            x = x + self.pos(torch.arange(start, start + T, device=idx.device))
        rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T]) if self.cfg.position != "learned" \
            else None
        for block in self.blocks:
            x = block(x, cache, rope)
        if cache is not None:
            cache.pos += T
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab) next-token logits."""
        return self.head(self.body(idx, cache))

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        n -= 0 if self.pos is None else self.pos.weight.numel()
        return n - (self.tok.weight.numel() if non_embedding else 0)
