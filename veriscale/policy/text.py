"""What every text sampler shares (the transformers one in `policy/hf.py`, the vLLM one in
`policy/vllm.py`): sampling options, prompt encoding (chat template or plain text), incremental
decoding with per-token character offsets, and `Rollouts` built from generated ids.

Layers, so other decoding logic (budget forcing, `policy/forcing.py`) reuses them:
`encode_prompt` (chat template or plain text) -> a backend's `generate_ids` (prompt ids ->
generated ids) -> `text_rollouts` (ids -> Rollouts with texts and offsets). `TextSampler.sample`
chains the three. Texts keep special tokens (an EOS shows as its string, e.g. `<|im_end|>`), so a
checker can tell an answer that was finished from one cut off at the budget.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from veriscale.config import knob, to_dict
from veriscale.tasks.base import Rollouts


@dataclass
class HFConfig:
    batch_size: int = knob(256, "rows decoded together; larger is faster per token until memory runs out (the "
                                "transformers sampler's draw at 64, 256 and 512 rows: BENCHMARKS.md)", min=1)
    top_k: int = knob(0, "sample from the k most likely tokens (0 = all)", min=0)
    chat: Literal["auto", "on", "off"] = knob("auto", "wrap prompts in the chat template (auto: when the "
                                              "tokenizer has one)")
    system: str = knob("", "system message for the chat template ('' = the template's own default)")
    stop: list[str] = knob([], "stop strings: a row ends after the token that completes one")
    dtype: Literal["float32", "bfloat16"] = knob("float32", "weights and activations dtype")
    sample_dtype: Literal["same", "float32", "bfloat16"] = knob(
        "same", "dtype the transformers sampler decodes in (same = dtype): bfloat16 decodes with a bf16 copy of the "
                "weights, several times faster on CPUs with AVX-512 bf16; training and RL's kept features stay in dtype")
    draw: Literal["multinomial", "inverse_cdf"] = knob(
        "inverse_cdf", "how the transformers sampler draws a token from the softmax (policy/engine.py sample_next): "
                       "the same distribution; inverse_cdf is several times faster on a CPU's 49k vocabulary")
    decode_attention: Literal["bmm", "sdpa"] = knob(
        "bmm", "how the transformers sampler's decode steps attend over the KV cache: bmm = two batched matmuls over "
               "the key/value heads, softmax in float32 as transformers' eager attention (policy/decode_attention.py); "
               "sdpa = the model's own attention (torch's SDPA kernel, several times slower for one query token on a "
               "CPU; bmm was measured on CPUs only, GPUs sample with vLLM). Prefills attend with SDPA either way")
    refill: bool = knob(True, "continuous batching (transformers sampler): waiting rows take the places of "
                              "ended ones (off: fixed micro-batches of batch_size rows)")
    progress: bool = knob(True, "show a progress bar over the rows")


# Settings added after studies were stored, each at the value that does what those studies did.
# A job's id hashes its settings without them at that value, so the stored studies' jobs keep
# their ids, and a stored study that lacks one ran at that value (study/sweep.py load_study).
HF_BEFORE = {"decode_attention": "sdpa"}


def hf_identity(cfg: HFConfig) -> dict:
    """The settings as a job's id hashes them: those of `HF_BEFORE` at their earlier value left out."""
    return {k: v for k, v in to_dict(cfg).items() if k not in HF_BEFORE or HF_BEFORE[k] != v}


def generation_eos(path: Path) -> int | list[int] | None:
    """The EOS id(s) transformers would give the model's generation config (its own file, else
    derived from config.json), so both backends stop on the same ids."""
    from transformers import AutoConfig, GenerationConfig

    if (path / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(path, local_files_only=True).eos_token_id
    return GenerationConfig.from_model_config(AutoConfig.from_pretrained(path, local_files_only=True)).eos_token_id


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

    def generate_features(self, ids: list[list[int]], max_new: int, *, temperature: float,
                          generator: torch.Generator, layer: int) -> tuple[list[list[int]], list[torch.Tensor]] | None:
        """`generate_ids` that also keeps, per row, the hidden states after `layer` blocks at
        every fed token, (len(prompt) + len(row) - 1, d); None where the backend cannot."""
        return None

    def sample(self, prompts: Sequence[Any], max_new_tokens: int, *, temperature: float = 1.0,
               seed: int = 0, generator: torch.Generator | None = None, capture: int = 0) -> Rollouts:
        """One rollout per prompt, at most max_new_tokens each; tokens are (B, max_new_tokens).
        Draws from `generator` when given, else from a generator seeded with `seed`. With
        `capture` = k > 0 the rollouts carry the hidden states after k blocks (`features`) where
        the backend can keep them."""
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        ids = [self.encode(p) for p in prompts]
        kept = self.generate_features(ids, max_new_tokens, temperature=temperature, generator=g,
                                      layer=capture) if capture else None
        if capture and kept is None:
            warnings.warn(f"{type(self).__name__} cannot keep the frozen trunk's features while sampling: RL "
                          f"computes them again (sampler = \"hf\" keeps them)", stacklevel=2)
        rows, feats = kept if kept is not None else (self.generate_ids(ids, max_new_tokens, temperature=temperature,
                                                                       generator=g), None)
        ro = text_rollouts(self.tok, rows, max_new_tokens, self.pad_id)
        ro.features = feats
        return ro
