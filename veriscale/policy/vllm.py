"""The optional vLLM sampling backend: `pip install 'veriscale[vllm]'`, and a CUDA GPU.

`VLLMSampler` has the surface of `HFSampler` (policy/hf.py) that sampling and budget forcing use (`tok`,
`eos_ids`, `pad_id`, `use_chat`, `encode`, `generate_ids`, `sample`), and shares its prompt
encoding and Rollouts building (`TextSampler` in `policy/text.py`), so both backends return the
same kind of rollouts; the sampled tokens differ, since the two draw random numbers differently.
Load it with `load_policy("hf:PATH", sampler="vllm")` (policy/load.py). Only a local model directory is
loaded, never the model hub. `vllm` is imported inside functions, so this module imports
without it; `check_vllm()` says what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from veriscale.policy.text import HFConfig, TextSampler, generation_eos


class BackendUnavailable(RuntimeError):
    """A sampling backend cannot run here (a package or the hardware it needs is missing)."""


def check_vllm() -> None:
    """Raise BackendUnavailable, saying what to do, unless vllm imports and a CUDA GPU is visible."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable("vLLM sampling needs the vllm package: pip install 'veriscale[vllm]' "
                                 "(or use the default transformers backend, backend='hf')") from e
    if not torch.cuda.is_available():
        raise BackendUnavailable("vLLM sampling needs a CUDA GPU; use the default transformers backend on CPU "
                                 "(backend='hf')")


class VLLMSampler(TextSampler):
    """Sampling with vLLM's engine from a local model directory; see the module docstring."""

    def __init__(self, path: str | Path, cfg: HFConfig | None = None):
        check_vllm()  # before anything loads
        from transformers import AutoTokenizer
        from vllm import LLM

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a transformers model directory (no config.json)")
        super().__init__(AutoTokenizer.from_pretrained(path, local_files_only=True), cfg, generation_eos(path))
        self.llm = LLM(model=str(path), tokenizer=str(path), dtype=self.cfg.dtype, seed=0)

    def generate_ids(self, ids: list[list[int]], max_new: int, *, temperature: float,
                     generator: torch.Generator) -> list[list[int]]:
        """Per prompt id row, the generated ids, in one `llm.generate` call (vLLM batches itself)."""
        from vllm import SamplingParams

        if max_new < 1:  # vLLM needs max_tokens >= 1
            return [[] for _ in ids]
        # One seed per row: vLLM seeds each request on its own, so rows of one prompt sharing a
        # seed would come out identical.
        seeds = torch.randint(0, 2**31 - 1, (len(ids),), generator=generator).tolist()
        params = [SamplingParams(temperature=temperature, max_tokens=max_new, seed=s,
                                 stop_token_ids=self.eos_ids.tolist(), stop=list(self.cfg.stop),
                                 include_stop_str_in_output=True, skip_special_tokens=False,
                                 top_k=self.cfg.top_k or -1) for s in seeds]
        outs = self.llm.generate([{"prompt_token_ids": r} for r in ids], params, use_tqdm=self.cfg.progress)
        return [self._with_eos(o.outputs[0], max_new) for o in outs]

    def _with_eos(self, out: Any, max_new: int) -> list[int]:
        """The row's ids with the EOS that ended it kept, as HFSampler does. vLLM names the stop
        token id in `stop_reason`, or leaves it None with finish_reason "stop" for the
        tokenizer's own EOS; the id is appended should the output omit it."""
        ids = list(out.token_ids)
        if isinstance(out.stop_reason, int):
            end = out.stop_reason
        elif out.finish_reason == "stop" and out.stop_reason is None:
            end = self.tok.eos_token_id
        else:  # the length limit or a stop string
            return ids
        if end is not None and (not ids or ids[-1] != end) and len(ids) < max_new:
            ids.append(end)
        return ids
