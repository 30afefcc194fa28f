"""The transformers sampler of an `HFPolicy` (policy/hf.py), on CPU or GPU.

`HFSampler` is batched KV-cache sampling (all rows of one micro-batch of `batch_size` together):
- prompts are wrapped in the tokenizer's chat template when it has one (`chat`), tokenised and
  left-padded; identical prompts (M samples of one question sit next to each other) are
  prefilled once and their KV cache rows copied, which saves most of the prefill when M > 1;
- decoding feeds one token per row per step through a transformers `DynamicCache` whose
  full-attention layers grow in place (policy/kv_cache.py), with explicit position ids so left
  padding does not shift positions; a decode step attends by two batched matmuls over the
  key/value heads (`decode_attention = "bmm"`, policy/decode_attention.py) or the model's own SDPA;
- a row ends after an EOS token (kept and counted, like the tiny-GPT engine) or after the token
  that completes a stop string (kept); when a quarter of the live rows have ended, they are
  dropped from the batch and the cache, so finished rows stop costing compute, and (`refill`,
  continuous batching) waiting rows take their places, so a batch does not run its longest
  rows alone while others wait: on a CPU a step of a few rows costs almost what a full one does;
- an `editor` may end rows or force tokens into them while they decode (budget forcing in one
  pass, policy/forcing.py);
- `sample_dtype = "bfloat16"` decodes with a bf16 copy of the weights (several times faster
  where the CPU has AVX-512 bf16), made again whenever the weights change.
Same prompts, seed and batch size give the same rollouts.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from typing import Any, Callable

import torch

from veriscale import progress
from veriscale.policy.engine import sample_next
from veriscale.policy import decode_attention
from veriscale.policy.kv_cache import cut as cut_columns, editable, growing_cache, join
from veriscale.policy.text import HFConfig, IncrementalText, TextSampler

# editor(row index, sampled token) -> None (the row ends) or the tokens the model reads next
Editor = Callable[[int, int], "list[int] | None"]


class HFSampler(TextSampler):
    """Batched KV-cache sampling from a transformers causal LM; see the module docstring."""

    def __init__(self, model, tokenizer, cfg: HFConfig | None = None):
        super().__init__(tokenizer, cfg, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        self.model = model.eval()
        self._cast: tuple[tuple[int, ...], Any] | None = None  # (weights' versions, their copy in sample_dtype)

    def decoder(self, features: bool = False):
        """The network that decodes: the model itself, or (`cfg.sample_dtype`) its copy in that
        dtype, made again whenever a weight changed in place (an optimiser step, a load).
        Features are read by training, so they always come from the model itself."""
        dtype = getattr(torch, self.cfg.sample_dtype) if self.cfg.sample_dtype != "same" else None
        if dtype is None or dtype == self.model.dtype:
            return self.model
        if features:
            warnings.warn(f"hf.sample_dtype = {self.cfg.sample_dtype!r} is not used while sampling keeps the frozen "
                          f"trunk's features for training (RL with train_layers): they come from the model in "
                          f"{self.model.dtype}", stacklevel=3)
            return self.model
        stamp = tuple(p._version for p in self.model.parameters())
        if self._cast is None or self._cast[0] != stamp:
            self._cast = (stamp, copy.deepcopy(self.model).to(dtype).eval())
        return self._cast[1]

    edits_inline = True  # generate_ids takes an `editor` (budget forcing in one pass, policy/forcing.py)

    def generate_ids(self, ids: list[list[int]], max_new: int, *, temperature: float,
                     generator: torch.Generator, editor: Editor | None = None) -> list[list[int]]:
        """Per prompt id row, the generated ids, at most cfg.batch_size rows at a time, drawing
        from `generator` in order (so the result depends on the batch size). With an `editor`,
        each sampled token of row i goes to editor(i, token), which returns None to end the row
        or the tokens the model reads next (the token, or tokens forced in its place or after
        it), and the rows it returns are empty: the editor keeps the rows."""
        bar = self._bar(len(ids))
        with bar:
            return self._generate(ids, max_new, temperature, generator, 0, bar.update, editor)[0]

    def _bar(self, rows: int):
        return progress.bar(None, desc="sample", unit="row", total=rows,
                            disable=not self.cfg.progress or rows <= self.cfg.batch_size)

    def generate_features(self, ids: list[list[int]], max_new: int, *, temperature: float,
                          generator: torch.Generator, layer: int) -> tuple[list[list[int]], list[torch.Tensor]]:
        """`generate_ids`, plus per row the hidden states after `layer` blocks at every fed token
        (layer 0: no features, an empty list): the decoding computes them anyway, so RL with a
        frozen trunk need not run the trunk again."""
        bar = self._bar(len(ids))
        with bar:
            return self._generate(ids, max_new, temperature, generator, layer, bar.update)

    @torch.inference_mode()
    def _prefill(self, net, ids: list[list[int]], layer: int):
        """Prefill the distinct prompts once, then copy their cache rows to every sample.

        `net` is the decoding network. Returns (cache, attn (b, P) left-padding mask, pos (b,)
        next position id, logits (b, V),
        and with layer > 0 the hidden states after `layer` blocks (b, P, d), else None).
        """
        distinct: dict[tuple[int, ...], int] = {}
        row_of = torch.tensor([distinct.setdefault(tuple(r), len(distinct)) for r in ids])  # (b,)
        uniq = list(distinct)
        P = max(len(u) for u in uniq)
        inp = torch.full((len(uniq), P), self.pad_id, dtype=torch.long)
        attn = torch.zeros(len(uniq), P, dtype=torch.long)
        for i, u in enumerate(uniq):  # left padding: every prompt ends at column P-1
            inp[i, P - len(u):] = torch.tensor(u)
            attn[i, P - len(u):] = 1
        position_ids = (attn.cumsum(1) - 1).clamp(min=0)  # (U, P): real tokens count 0, 1, ...
        cache = growing_cache(net.config, whole=self.cfg.decode_attention == "bmm")
        # The last column's logits only, kept by index: the head then reads a contiguous (U, 1, d)
        # copy. logits_to_keep=1 hands it a strided view, on which torch 2.13's CPU linear, with
        # the bf16 copy's weights made under inference_mode, takes a path ~300x slower that holds
        # GBs (10.9 GB at 200 prompts; BENCHMARKS.md).
        out = net(input_ids=inp, attention_mask=attn, position_ids=position_ids, cache=cache,
                  use_cache=True, logits_to_keep=torch.tensor([P - 1]), output_hidden_states=layer > 0)
        cache.batch_select_indices(row_of)
        hidden = out.hidden_states[layer][row_of] if layer > 0 else None
        return cache, attn[row_of], attn.sum(1)[row_of], out.logits[row_of, -1].float(), hidden

    @torch.inference_mode()
    def _generate(self, ids: list[list[int]], max_new: int, temperature: float, g: torch.Generator,
                  layer: int = 0, finished=lambda n: None,
                  editor: Editor | None = None) -> tuple[list[list[int]], list[torch.Tensor]]:
        """Sample every row, at most `batch_size` at a time; returns each row's generated ids and,
        with layer > 0, its features (hidden states after `layer` blocks at the prompt and every
        fed trace token). `finished(k)` is told as k more rows end; `editor`: see `generate_ids`.

        Rows enter in order. Ended rows stay in the batch until a quarter of it has ended; then
        they are dropped from the batch and the cache (compaction) and, with `cfg.refill`, as many
        waiting rows are prefilled and joined to it, so the batch stays full instead of running
        its last rows alone (without refill, the next rows enter when the batch is empty: fixed
        micro-batches). A joined row's cache is left-padded to the batch's width (or the batch's
        to its); columns that are padding in every row are cut off.
        """
        if editor is not None and (layer or self.cfg.stop):
            raise ValueError("an editor decodes without features or stop strings")
        net = self.decoder(features=layer > 0)
        with attending(net, decode_attention.implementation(self.cfg.decode_attention)):
            return self._decode(net, ids, max_new, temperature, g, layer, finished, editor)

    def _decode(self, net, ids: list[list[int]], max_new: int, temperature: float, g: torch.Generator,
                layer: int, finished, editor: Editor | None) -> tuple[list[list[int]], list[torch.Tensor]]:
        """`_generate`'s loop, with `net` the decoding network."""
        bs, eos = self.cfg.batch_size, set(self.eos_ids.tolist())
        rows: list[list[int]] = [[] for _ in ids]
        # Only stop strings need the text while decoding; text_rollouts decodes the rows later.
        texts = [IncrementalText(self.tok) for _ in ids] if self.cfg.stop else []
        feats: list[list[torch.Tensor]] = [[] for _ in ids] if layer > 0 else []
        longest_stop = max((len(s) for s in self.cfg.stop), default=0)
        cache, attn = None, torch.zeros(0, 0, dtype=torch.long)  # attn (b, S): 1 at real tokens
        live = torch.zeros(0, dtype=torch.long)  # (b,) which output row each batch row writes
        done = torch.zeros(0, dtype=torch.bool)  # (b,) ended, not yet dropped
        pos = torch.zeros(0, dtype=torch.long)  # (b,) position id of the next fed token
        nxt = torch.zeros(0, dtype=torch.long)  # (b,) the token sampled last, fed next
        waiting = 0  # ids[waiting:] have not entered

        forced: list[list[int]] = [[] for _ in ids]  # per row, editor tokens still to feed

        def take(tokens: torch.Tensor, rows_of: torch.Tensor, was_done: torch.Tensor) -> torch.Tensor:
            """Append each going row's sampled token, or hand it to the editor (which may put
            other tokens in `tokens`, the next fed ones); (b,) True where the row ends."""
            ended = torch.zeros_like(was_done)
            for j in (~was_done).nonzero().squeeze(1).tolist():
                i, t = int(rows_of[j]), int(tokens[j])
                if forced[i]:  # a forced token is fed in place of what was sampled
                    tokens[j] = forced[i].pop(0)
                elif editor is not None:
                    feed = editor(i, t)
                    ended[j] = feed is None
                    if feed is not None:
                        tokens[j], forced[i] = feed[0], feed[1:]
                else:
                    rows[i].append(t)
                    ended[j] = t in eos or len(rows[i]) == max_new
                    if texts:
                        start = max(0, len(texts[i].text) - longest_stop + 1)
                        texts[i].push(t)
                        ended[j] |= any(s in texts[i].text[start:] for s in self.cfg.stop)
            finished(int(ended.sum()))
            return was_done | ended

        while True:
            if (~done).sum() <= 0.75 * len(live):  # drop ended rows from the batch and the cache
                keep = (~done).nonzero().squeeze(1)
                if len(keep) < len(live):
                    cache.batch_select_indices(keep)
                    live, nxt, done, attn, pos = live[keep], nxt[keep], done[keep], attn[keep], pos[keep]
                    cut = int((attn.sum(0) > 0).nonzero()[0]) if len(keep) else attn.shape[1]
                    if cut and editable(cache):  # columns that are padding in every row
                        cut_columns(cache, cut)
                        attn = attn[:, cut:]
                if self.cfg.refill and cache is not None and not editable(cache):  # shown once (warnings' rule)
                    warnings.warn("hf.refill: continuous batching is off for this model: its sliding-window KV cache "
                                  "layers cannot be padded, joined or cut, so rows enter in fixed micro-batches of "
                                  "hf.batch_size", stacklevel=2)
                room = bs - len(live) if not len(live) or (self.cfg.refill and editable(cache)) else 0
                if room and waiting < len(ids):  # rows enter: prefill, sample their first token, join
                    new = torch.arange(waiting, min(len(ids), waiting + room))
                    waiting += len(new)
                    c2, a2, p2, logits, hidden = self._prefill(net, [ids[i] for i in new.tolist()], layer)
                    for j, i in enumerate(new.tolist()):
                        if layer > 0:  # the prompt's features, left padding cut off
                            feats[i].append(hidden[j, hidden.shape[1] - len(ids[i]):])
                    n2 = sample_next(logits, temperature, self.cfg.top_k, g, self.cfg.draw)
                    d2 = take(n2, new, torch.zeros(len(new), dtype=torch.bool))
                    cache, attn = (c2, a2) if cache is None or not len(live) else join(cache, attn, c2, a2)
                    live, nxt, done = torch.cat([live, new]), torch.cat([nxt, n2]), torch.cat([done, d2])
                    pos = torch.cat([pos, p2])
            if done.all():
                if waiting == len(ids):
                    break
                continue  # every row in the batch has ended: the next rows enter
            attn = torch.cat([attn, torch.ones(len(live), 1, dtype=attn.dtype)], 1)  # (b, S+1)
            out = net(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos[:, None], cache=cache,
                             use_cache=True, output_hidden_states=layer > 0)
            if layer > 0:  # the fed token of every row still going (an ended row's last token is never an input)
                h = out.hidden_states[layer][:, -1]  # (b, d)
                for j in (~done).nonzero().squeeze(1).tolist():
                    feats[int(live[j])].append(h[j:j + 1])
            pos = pos + 1
            nxt = sample_next(out.logits[:, -1], temperature, self.cfg.top_k, g, self.cfg.draw)
            done = take(nxt, live, done)
        return rows, [torch.cat(f) for f in feats]


@contextmanager
def attending(net, implementation: str | None):
    """`net` with its attention implementation set to `implementation` (None: left as it is),
    set back on exit: the policy's model is shared with training, whose forwards keep theirs."""
    before = net.config._attn_implementation
    if implementation is None or implementation == before:
        yield net
        return
    net.set_attn_implementation(implementation)
    try:
        yield net
    finally:
        net.set_attn_implementation(before)
