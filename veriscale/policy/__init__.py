"""Policies: the tiny GPT, its sampling engine and checkpoints."""

from typing import Literal, get_args

# The samplers of a transformers policy: transformers, vLLM (GPU) or CTranslate2 (CPU). Kept in
# this import-light module so the command line can offer them without loading torch.
SamplerName = Literal["hf", "vllm", "ct2"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
