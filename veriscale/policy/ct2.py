"""The CPU sampling backend: CTranslate2 (`pip install 'veriscale[cpu]'`), `sampler = "ct2"`.

Why: on 2 CPU cores SmolLM2-135M-Instruct samples about 1.7x faster with CTranslate2's int8
kernels than with `HFSampler` in float32, without the success-rate loss of torch's per-tensor
dynamic int8 quantisation: CTranslate2 quantises each weight row on its own scale and each
activation row on the fly, so basic_arithmetic pass rates stay within a standard error of float32
(benchmarks/sampler_speed.py has the figures and the command). "int8" is the default compute
type; "float32" is the exact reference (slower than transformers on these cores).

`CT2Sampler` converts a transformers directory once into a cached CTranslate2 directory
(`$VERISCALE_CT2_DIR`, else ~/.cache/veriscale/ct2/, one subdirectory per weights digest and
compute type, written to a temp directory and renamed), shares prompt encoding and Rollouts with
the other samplers (`TextSampler`), and implements `generate_ids` with `generate_batch`:
- identical prompts (M samples of a question sit together) go in once with num_hypotheses=M,
  so each distinct prompt is prefilled once, as HFSampler does;
- a row ends after an EOS (kept), at max_new, or after the token completing a stop string (the
  row is cut after decoding: CTranslate2 cannot stop on strings);
- determinism: CTranslate2 draws from a per-thread generator seeded only when its worker thread
  first samples, so each call reseeds from `generator` and builds a fresh `ctranslate2.Generator`
  (about 0.25 s for int8); the same prompts, seed and batch size give the same rows. The draws
  differ from HFSampler's, as vLLM's do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from veriscale.policy.text import HFConfig, IncrementalText, TextSampler
from veriscale.policy.vllm import BackendUnavailable, _generation_eos

ENV_DIR = "VERISCALE_CT2_DIR"
DEFAULT_DIR = Path.home() / ".cache" / "veriscale" / "ct2"
ComputeType = Literal["int8", "int8_float32", "float32"]


def check_ct2() -> None:
    """Raise BackendUnavailable, saying what to install, unless ctranslate2 imports."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable("CTranslate2 sampling needs the ctranslate2 package: pip install "
                                 "'veriscale[cpu]' (or pip install ctranslate2)") from e


def weights_digest(path: Path) -> str:
    """sha256 over the model's weight files and config, so a retrained model converts anew."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + [path / "config.json"]:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def ensure_ct2(path: Path, compute_type: str, cache: str | Path | None = None) -> Path:
    """The cached CTranslate2 conversion of transformers directory `path` (converted once)."""
    from ctranslate2.converters import TransformersConverter

    root = Path(cache or os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()
    out = root / f"{weights_digest(path)[:16]}-{compute_type}"
    if (out / "model.bin").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".convert-"))
    try:  # convert beside the target and rename, so a killed conversion never looks finished
        TransformersConverter(str(path)).convert(str(tmp / "m"), quantization=compute_type)
        os.replace(tmp / "m", out)
    except OSError:
        if not (out / "model.bin").is_file():  # another process finishing first is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class CT2Sampler(TextSampler):
    """Batched sampling with CTranslate2 on CPU from a local transformers directory."""

    def __init__(self, path: str | Path, tokenizer, cfg: HFConfig | None = None,
                 compute_type: ComputeType = "int8", cache: str | Path | None = None):
        check_ct2()
        path = Path(path)
        super().__init__(tokenizer, cfg, _generation_eos(path))
        self.compute_type = compute_type
        self.dir = ensure_ct2(path, compute_type, cache)

    def _generator(self):
        import ctranslate2

        return ctranslate2.Generator(str(self.dir), device="cpu", compute_type=self.compute_type,
                                     intra_threads=torch.get_num_threads())

    def generate_ids(self, ids: list[list[int]], max_new: int, *, temperature: float,
                     generator: torch.Generator) -> list[list[int]]:
        """Per prompt id row, the generated ids, in micro-batches of cfg.batch_size rows."""
        import ctranslate2

        if max_new < 1 or not ids:
            return [[] for _ in ids]
        # Seed, then a fresh Generator: its worker thread seeds its sampler on first use only.
        ctranslate2.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        gen = self._generator()
        rows: list[list[int]] = []
        for start in range(0, len(ids), self.cfg.batch_size):
            rows += self._batch(gen, ids[start:start + self.cfg.batch_size], max_new, temperature)
        return [self._cut(r) for r in rows] if self.cfg.stop else rows

    def _batch(self, gen, ids: list[list[int]], max_new: int, temperature: float) -> list[list[int]]:
        """One micro-batch: runs of an identical prompt go in once with num_hypotheses = run
        length (one call per distinct run length, usually one)."""
        runs: list[tuple[int, int]] = []  # (first row, length) of each run of identical prompts
        for i, r in enumerate(ids):
            if runs and ids[runs[-1][0]] == r:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((i, 1))
        out: list[list[int]] = [[] for _ in ids]
        greedy = temperature <= 0
        if greedy:  # every sample of a prompt is the same row; CTranslate2 wants one hypothesis
            runs = [(s + j, 1) for s, n in runs for j in range(n)]
        for m in sorted({n for _, n in runs}):
            group = [s for s, n in runs if n == m]
            res = gen.generate_batch(
                [self.tok.convert_ids_to_tokens(ids[s]) for s in group], max_length=max_new,
                sampling_topk=1 if greedy else (self.cfg.top_k or 0), sampling_temperature=1.0 if greedy else temperature,
                num_hypotheses=m, end_token=self.eos_ids.tolist(), return_end_token=True,
                include_prompt_in_result=False)
            for s, r in zip(group, res):
                for j, seq in enumerate(r.sequences_ids):
                    out[s + j] = list(seq)
        return out

    def _cut(self, row: list[int]) -> list[int]:
        """The row up to the token that first completes a stop string."""
        text = IncrementalText(self.tok)
        longest = max(len(s) for s in self.cfg.stop)
        for n, t in enumerate(row, 1):
            start = max(0, len(text.text) - longest + 1)
            text.push(t)
            if any(s in text.text[start:] for s in self.cfg.stop):
                return row[:n]
        return row
