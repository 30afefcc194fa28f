"""A transformers causal language model behind the `Sampler` interface (text tasks).

`HFSampler.sample(prompts, max_new_tokens, temperature=, seed=)` takes text prompts (strings, or
objects with a `.text` such as `grading.TextProblem`) and returns `Rollouts` with tokens, masks,
per-row token counts, the decoded texts and, per generated token, the end character offset in
its row's text, so a checker that finds the final answer in the text can name the token that
completed it (the first-success index T).

How it samples (all rows of one micro-batch of `batch_size` rows together):
- prompts are wrapped in the tokenizer's chat template when it has one (`chat`), tokenised and
  left-padded; identical prompts (M samples of one question sit next to each other) are
  prefilled once and their KV cache rows copied, which saves most of the prefill when M > 1;
- decoding feeds one token per row per step through a transformers `DynamicCache`, with
  explicit position ids so left padding does not shift positions;
- a row ends after an EOS token (kept and counted, like the tiny-GPT engine) or after the token
  that completes a stop string (kept); when a quarter of the live rows have ended, they are
  dropped from the batch and the cache, so finished rows stop costing compute;
- texts keep special tokens (an EOS shows as its string, e.g. `<|im_end|>`), so a checker can
  tell an answer that was finished from one cut off at the budget.

Layers, so other decoding logic (budget forcing, `policy/forcing.py`) and the vLLM backend
(`policy/vllm.py`) reuse them: `encode_prompt` (chat template or plain text) -> `generate_ids`
(prompt ids -> generated ids; micro-batches and the progress bar live here) -> `text_rollouts`
(ids -> Rollouts with texts and offsets). `TextSampler.sample` chains the three.

Same prompts, seed and batch size give the same rollouts. Load a local model directory with
`load_hf_policy(PATH)`, or `load_text_sampler(PATH, backend="hf"|"vllm")` (local files only:
nothing is fetched from the model hub).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from veriscale import progress
from veriscale.config import knob
from veriscale.policy.engine import sample_next
from veriscale.tasks.base import Rollouts


@dataclass
class HFConfig:
    batch_size: int = knob(64, "rows decoded together; larger is faster per token until memory runs out", min=1)
    top_k: int = knob(0, "sample from the k most likely tokens (0 = all)", min=0)
    chat: Literal["auto", "on", "off"] = knob("auto", "wrap prompts in the chat template (auto: when the "
                                              "tokenizer has one)")
    system: str = knob("", "system message for the chat template ('' = the template's own default)")
    stop: list[str] = knob([], "stop strings: a row ends after the token that completes one")
    dtype: Literal["float32", "bfloat16"] = knob("float32", "weights and activations dtype")
    progress: bool = knob(True, "show a progress bar over micro-batches")


def prompt_text(prompt: Any) -> str:
    """The user message of a prompt: a string, or an object's `.text`."""
    return prompt if isinstance(prompt, str) else prompt.text


class IncrementalText:
    """Decodes one row token by token: `text` so far and the end offset of every token in it.

    Each new token is decoded together with a few preceding tokens and only the new suffix is
    appended, so multi-token characters and tokenizers that merge spaces decode as in a full
    decode; a token that ends inside a UTF-8 character adds nothing until the character is whole.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self.offsets: list[int] = []
        self._prefix = 0  # ids[_prefix:_read] are context already emitted into `text`
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        """Append a token; returns the characters it added."""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        piece = ""
        if len(after) > len(before) and not after.endswith("\ufffd"):
            piece = after[len(before):]
            self.text += piece
            self._prefix, self._read = self._read, len(self.ids)
        self.offsets.append(len(self.text))
        return piece

    def finish(self) -> None:
        """At the row's end, emit what an unfinished character left pending (as U+FFFD), so
        `text` equals a full decode of the row."""
        if self._read < len(self.ids):
            before = self._decode(self.ids[self._prefix:self._read])
            self.text += self._decode(self.ids[self._prefix:])[len(before):]
            self.offsets[-1] = len(self.text)


def encode_prompt(tokenizer, prompt: Any, use_chat: bool, system: str) -> list[int]:
    """Prompt token ids: the chat template (with generation prompt, and `system` as a system
    message when not '') or the plain text."""
    text = prompt_text(prompt)
    if not use_chat:
        return tokenizer(text).input_ids
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False).input_ids


def text_rollouts(tokenizer, rows: list[list[int]], width: int, pad_id: int) -> Rollouts:
    """Rollouts of generated token id rows (each at most `width` long): tokens (B, width) padded
    with pad_id, mask, counts, and each row's text and per-token end offsets."""
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    texts: list[str] = []
    offsets: list[list[int]] = []
    for i, ids in enumerate(rows):
        text = IncrementalText(tokenizer)
        for t in ids:
            text.push(t)
        text.finish()
        tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        texts.append(text.text)
        offsets.append(text.offsets)
    counts = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (B,)
    mask = torch.arange(width)[None] < counts[:, None]  # (B, width)
    return Rollouts(tokens=tokens, mask=mask, counts=counts, texts=texts, offsets=offsets)


class TextSampler(ABC):
    """What the transformers and vLLM samplers share: EOS and pad ids, prompt encoding and
    `sample` on top of a backend's `generate_ids`."""

    def __init__(self, tokenizer, cfg: HFConfig | None, gen_eos: int | list[int] | None):
        """gen_eos: the model's generation-config EOS id(s), used besides the tokenizer's."""
        self.tok, self.cfg = tokenizer, cfg or HFConfig()
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) | {tokenizer.eos_token_id}
        self.eos_ids = torch.tensor(sorted(e for e in eos if e is not None), dtype=torch.long)
        if not len(self.eos_ids):
            raise ValueError("the model and tokenizer define no EOS token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(self.eos_ids[0])
        self.use_chat = self.cfg.chat == "on" or (self.cfg.chat == "auto" and bool(tokenizer.chat_template))
        if self.cfg.chat == "on" and not tokenizer.chat_template:
            raise ValueError("hf.chat=on but the tokenizer has no chat template")

    def encode(self, prompt: Any) -> list[int]:
        """Prompt token ids: the chat template (with generation prompt) or the plain text."""
        return encode_prompt(self.tok, prompt, self.use_chat, self.cfg.system)

    @abstractmethod
    def generate_ids(self, ids: list[list[int]], max_new: int, *, temperature: float,
                     generator: torch.Generator) -> list[list[int]]:
        """Per prompt id row, the generated ids: a row ends after an EOS id (kept), after the
        token that completes a stop string, or at max_new tokens. Draws from `generator`."""

    def sample(self, prompts: Sequence[Any], max_new_tokens: int, *, temperature: float = 1.0,
               seed: int = 0) -> Rollouts:
        """One rollout per prompt, at most max_new_tokens each; tokens are (B, max_new_tokens)."""
        g = torch.Generator().manual_seed(seed)
        rows = self.generate_ids([self.encode(p) for p in prompts], max_new_tokens, temperature=temperature,
                                 generator=g)
        return text_rollouts(self.tok, rows, max_new_tokens, self.pad_id)


class HFSampler(TextSampler):
    """Batched KV-cache sampling from a transformers causal LM; see the module docstring."""

    def __init__(self, model, tokenizer, cfg: HFConfig | None = None):
        super().__init__(tokenizer, cfg, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        self.model = model.eval()

    def generate_ids(self, ids: list[list[int]], max_new: int, *, temperature: float,
                     generator: torch.Generator) -> list[list[int]]:
        """Per prompt id row, the generated ids, in micro-batches of cfg.batch_size rows that
        draw from `generator` in order (so the result depends on the batch size)."""
        bs = self.cfg.batch_size
        bar = progress.bar(range(0, len(ids), bs), desc="sample", unit="batch",
                           disable=not self.cfg.progress or len(ids) <= bs)
        return [row for start in bar for row in self._generate(ids[start:start + bs], max_new, temperature, generator)]

    @torch.inference_mode()
    def _prefill(self, ids: list[list[int]]):
        """Prefill the distinct prompts once, then copy their cache rows to every sample.

        Returns (cache, attn (b, P) left-padding mask, pos (b,) next position id, logits (b, V)).
        """
        from transformers import DynamicCache

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
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=inp, attention_mask=attn, position_ids=position_ids, cache=cache,
                         use_cache=True, logits_to_keep=1)
        cache.batch_select_indices(row_of)
        return cache, attn[row_of], attn.sum(1)[row_of], out.logits[row_of, -1].float()

    @torch.inference_mode()
    def _generate(self, ids: list[list[int]], max_new: int, temperature: float,
                  g: torch.Generator) -> list[list[int]]:
        """Sample one micro-batch; returns each row's generated ids."""
        rows: list[list[int]] = [[] for _ in ids]
        # Only stop strings need the text while decoding; text_rollouts decodes the rows later.
        texts = [IncrementalText(self.tok) for _ in ids] if self.cfg.stop else []
        cache, attn, pos, logits = self._prefill(ids)
        live = torch.arange(len(ids))  # (b,) which output row each batch row writes
        done = torch.zeros(len(ids), dtype=torch.bool)  # (b,) ended, not yet dropped
        longest_stop = max((len(s) for s in self.cfg.stop), default=0)
        for t in range(max_new):
            nxt = sample_next(logits, temperature, self.cfg.top_k, g)  # (b,)
            ended = torch.isin(nxt, self.eos_ids)
            for j in (~done).nonzero().squeeze(1).tolist():
                i = int(live[j])
                rows[i].append(int(nxt[j]))
                if texts:
                    start = max(0, len(texts[i].text) - longest_stop + 1)
                    texts[i].push(int(nxt[j]))
                    if any(s in texts[i].text[start:] for s in self.cfg.stop):
                        ended[j] = True
            done = done | ended
            if t + 1 == max_new or done.all():
                break
            if (~done).sum() <= 0.75 * len(live):  # drop ended rows from the batch and the cache
                keep = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, nxt, done, attn, pos = live[keep], nxt[keep], done[keep], attn[keep], pos[keep]
            attn = torch.cat([attn, torch.ones(len(live), 1, dtype=attn.dtype)], 1)  # (b, P+t+1)
            out = self.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos[:, None], cache=cache,
                             use_cache=True)
            pos = pos + 1
            logits = out.logits[:, -1].float()
        return rows


def load_hf_policy(path: str | Path, cfg: HFConfig | None = None) -> HFSampler:
    """An `HFSampler` for a local transformers model directory (weights + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a transformers model directory (no config.json)")
    cfg = cfg or HFConfig()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=getattr(torch, cfg.dtype))
    return HFSampler(model, tokenizer, cfg)


def load_text_sampler(path: str | Path, cfg: HFConfig | None = None, backend: str = "hf") -> TextSampler:
    """A sampler for a local model directory: backend "hf" (transformers, CPU or GPU) or "vllm"
    (needs `veriscale[vllm]` and a CUDA GPU; checked before anything loads)."""
    if backend == "hf":
        return load_hf_policy(path, cfg)
    if backend == "vllm":
        from veriscale.policy.vllm import VLLMSampler

        return VLLMSampler(path, cfg or HFConfig())
    raise ValueError(f"backend: expected 'hf' or 'vllm', got {backend!r}")
