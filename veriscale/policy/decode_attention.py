"""Attention of a decode step (one new token per row) as two batched matmuls over the key/value
heads: the transformers sampler's `hf.decode_attention = "bmm"` (policy/hf_sampler.py).

On a CPU, torch's `scaled_dot_product_attention` runs one query token through its flash kernel,
built for long queries: at 256 rows and 170 cached tokens a layer's call takes about 5 ms, as long
as all of the layer's matmuls, where the same arithmetic as two `torch.bmm` over contiguous keys
and values takes about 1.4 ms (BENCHMARKS.md, the decode profile). This is that arithmetic:

    scores = (q k^T) * scale + mask        per key/value head, its g query heads as g query rows
    out    = softmax_float32(scores) v

the order of transformers' eager attention (scores in the model's dtype, the softmax in float32,
cast back), with the query heads packed onto the key/value head they read instead of the keys
and values repeated to every query head. The cache (policy/kv_cache.py) hands it whole contiguous
buffers, the columns beyond the cached tokens masked, so `bmm` reads them without a copy. Queries
of more than one token (a prefill, a training forward) go to transformers' SDPA function.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "veriscale_decode_bmm"


def decode_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: query (b, H, q, d), key and value (b, kvh, C, d), the
    mask (b, 1, q, C) boolean (True = attend) or additive, or None; returns ((b, q, H, d), None)."""
    b, H, q_len, d = query.shape
    if q_len != 1 or dropout or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    kvh, C = key.shape[1], key.shape[2]
    g = H // kvh  # query heads per key/value head; query head h reads key/value head h // g
    scores = torch.bmm(query.reshape(b * kvh, g, d), key.reshape(b * kvh, C, d).transpose(1, 2))  # (b kvh, g, C)
    scores = scores.view(b, kvh, g, C).mul_(scaling if scaling is not None else d ** -0.5)
    if attention_mask is not None:
        mask = attention_mask.reshape(-1, 1, 1, C)  # (b or 1, 1, 1, C): broadcast over the heads
        scores = scores.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    probs = torch.softmax(scores, -1, dtype=torch.float32).to(query.dtype)  # (b, kvh, g, C)
    out = torch.bmm(probs.view(b * kvh, g, C), value.reshape(b * kvh, C, d))  # (b kvh, g, d)
    return out.view(b, 1, H, d), None


def implementation(choice: str) -> str | None:
    """The attention implementation `hf.decode_attention = choice` sets while decoding (None: the
    model's own, SDPA)."""
    return NAME if choice == "bmm" else None


AttentionInterface.register(NAME, decode_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same boolean masks as "sdpa"
