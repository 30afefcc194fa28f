"""The KV cache of `HFSampler` (policy/hf_sampler.py): transformers' `DynamicCache` with its
full-attention layers growing in place.

transformers' `DynamicLayer` appends a decode step's keys and values with `torch.cat`, which
copies the whole cache of every layer at every step: O(S) memory traffic per token, as much as
reading the cache for attention (BENCHMARKS.md, the decode profile). `GrowingLayer` keeps its
keys and values (b, heads, S, d) as the first S columns of zero-filled buffers (b, heads,
capacity, d) whose capacity grows in blocks of `BLOCK` columns, so a step writes one column in
place. With `whole` (for `hf.decode_attention = "bmm"`), like transformers' static cache, it
hands attention the whole contiguous buffers and reports their capacity as the mask's length
(`get_mask_sizes`): transformers pads the 2D mask with masked columns up to it, so the columns
beyond S take no weight, and a batched matmul reads the keys without copying them (a view of the
first S columns would be copied at every layer of every step; policy/decode_attention.py).
Without it attention gets the view of the S filled columns, as from transformers' own cache (what
SDPA computes on it is what it computed before `whole` existed, bit for bit). The `keys` and
`values` attributes are the S filled columns; code that replaces them (joining two batches,
cutting padding columns) sets a new buffer, exactly full; row selection keeps the room.
Sliding-window layers (Gemma 3) keep transformers' own class, and a cache that holds one is not
`editable`: its columns cannot be padded, joined or cut.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


BLOCK = 32  # capacity grows to the next multiple: a copy every BLOCK steps, at most BLOCK - 1 masked columns read


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose update writes in place into buffers with room (see module)."""

    def __init__(self, whole: bool = True, **kwargs):
        self.whole = whole  # attention gets the whole buffers (else the views of the filled columns)
        self._buf: dict[str, torch.Tensor | None] = {"keys": None, "values": None}  # (b, heads, capacity, d)
        self._len = {"keys": 0, "values": 0}  # filled columns of each
        super().__init__(**kwargs)

    def _view(self, name: str) -> torch.Tensor | None:
        t = self._buf[name]
        return t if t is None or t.dim() < 4 else t[:, :, :self._len[name]]

    def _set(self, name: str, t: torch.Tensor | None) -> None:
        self._buf[name], self._len[name] = t, (t.shape[-2] if t is not None and t.dim() == 4 else 0)

    keys = property(lambda self: self._view("keys"), lambda self, t: self._set("keys", t))
    values = property(lambda self: self._view("values"), lambda self, t: self._set("values", t))

    def _capacity(self, columns: int) -> int:
        """The buffers' capacity once they hold `columns` columns: the present one if they fit."""
        buf = self._buf["keys"]
        room = buf.shape[-2] if buf is not None and buf.dim() == 4 else 0
        return room if columns <= room else -(-columns // BLOCK) * BLOCK

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The mask spans what the next `update` returns (see module)."""
        if not self.whole:
            return super().get_mask_sizes(query_length)
        return self._capacity(self._len["keys"] + query_length), 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append (b, heads, n, d) keys and values; returns the whole (b, heads, capacity, d)
        buffers, the first S + n columns filled, zeros after them (without `whole`, the
        (b, heads, S + n, d) views of the filled columns)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        S, n = self._len["keys"], key_states.shape[-2]
        room = self._capacity(S + n)
        for name, new in (("keys", key_states), ("values", value_states)):
            buf = self._buf[name]
            if buf.dim() < 4 or room > buf.shape[-2]:  # full: a zero-filled buffer with room, the filled columns copied
                grown = new.new_zeros(*new.shape[:2], room, new.shape[-1])
                if S:
                    grown[:, :, :S] = buf[:, :, :S]
                buf = self._buf[name] = grown
            buf[:, :, S:S + n] = new
            self._len[name] = S + n
        return (self._buf["keys"], self._buf["values"]) if self.whole else (self.keys, self.values)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) the rows `indices` of the whole buffers: the room stays."""
        for name in ("keys", "values"):
            if self._buf[name] is not None and self._buf[name].dim() == 4:
                self._buf[name] = self._buf[name][indices]


def growing_cache(config, whole: bool = True) -> DynamicCache:
    """transformers' DynamicCache for `config`, its full-attention layers `GrowingLayer`s."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(whole) if type(lay) is DynamicLayer else lay for lay in cache.layers]
    return cache


def editable(cache) -> bool:
    """Whether every layer of the cache is a plain growing (b, heads, S, d) one, whose columns
    the sampler may pad, join and cut (a sliding-window layer is not)."""
    return all(type(lay) in (DynamicLayer, GrowingLayer) for lay in cache.layers)


def join(cache, attn: torch.Tensor, c2, a2: torch.Tensor):
    """Two batches' caches (layers of (b, heads, S, d) keys and values) and masks (b, S) as one,
    both right-aligned: the narrower is left-padded with masked zeros. Returns (cache, attn)."""
    W = max(attn.shape[1], a2.shape[1])
    pad = lambda x, S: torch.nn.functional.pad(x, (0, 0, W - S, 0))  # noqa: E731  left, along S
    S1, S2 = attn.shape[1], a2.shape[1]
    for lay, new in zip(cache.layers, c2.layers):
        lay.keys = torch.cat([pad(lay.keys, S1), pad(new.keys, S2)])
        lay.values = torch.cat([pad(lay.values, S1), pad(new.values, S2)])
    return cache, torch.cat([torch.nn.functional.pad(attn, (W - S1, 0)), torch.nn.functional.pad(a2, (W - S2, 0))])


def cut(cache, columns: int) -> None:
    """Drop the first `columns` columns of every layer (columns that are padding in every row)."""
    for lay in cache.layers:
        lay.keys, lay.values = lay.keys[:, :, columns:], lay.values[:, :, columns:]
