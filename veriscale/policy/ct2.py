"""The CPU sampling backend: CTranslate2 (`pip install 'veriscale[cpu]'`), `sampler = "ct2"`.

Why: the decoding loop runs in C++, so a step costs less than a transformers forward pass. On 2
AMD EPYC cores (AVX2), SmolLM2-135M-Instruct, 64 basic_arithmetic rows (benchmarks/sampler_speed.py):
float32 122 useful tokens/s vs HFSampler's 102 (1.19x), pass rate 0.449 vs 0.469 (paired
difference -0.02 +- 0.035); int8 134 (1.31x), pass rate 0.410 (-0.06 +- 0.04). So float32 is the
default; int8 is opt-in (`CT2Sampler(..., compute_type="int8")`).

int8 needs care without AVX-512 VNNI: oneDNN multiplies uint8 activations by int8 weights with
vpmaddubsw, whose int16 pair sums saturate, and a plain int8 conversion fell to 0.18. Two steps
(exact in float) recover most of it: SmoothQuant (Xiao et al. 2023, alpha 0.5, activation maxima
over `CALIBRATION`) moves activation outliers of the q/k/v, gate/up and down projections into
their weights, and the int8 weights are halved to 7 bits (|w| <= 64: no pair sum overflows).

The conversion is cached in `$VERISCALE_CT2_DIR`, else ~/.cache/veriscale/ct2/, one directory per
weights digest and recipe (written to a temp directory, then renamed). Identical prompts next to
each other go in once with num_hypotheses (one prefill per question, as HFSampler). A row ends
after an EOS (kept), at max_new, or after the token completing a stop string (cut after decoding:
CTranslate2 cannot stop on strings). It samples the directory's weights: a learner's in-memory
changes reach it once saved. Determinism: CTranslate2 seeds a worker thread's generator at its
first draw only, so each call seeds from `generator` and builds a fresh `ctranslate2.Generator`
(0.1-0.6 s); the same prompts, seed and batch size give the same rows, other draws than HFSampler's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from veriscale.policy.text import HFConfig, IncrementalText, TextSampler, generation_eos
from veriscale.policy.vllm import BackendUnavailable

ENV_DIR = "VERISCALE_CT2_DIR"
DEFAULT_DIR = Path.home() / ".cache" / "veriscale" / "ct2"
ComputeType = Literal["int8", "float32"]
DEFAULT_COMPUTE: ComputeType = "float32"
RECIPE = {"float32": "float32", "int8": "int8-smooth0.5-w7"}  # in the cache key: a new recipe converts anew
CALIBRATION = [  # mixed text: outlier channels belong to the model, not to one task
    "What is 37 + 48? Add the ones: 7 + 8 = 15, carry 1; then 3 + 4 + 1 = 8. Final answer: 85",
    "Tom has 12 apples and gives away 5. How many are left? 12 - 5 = 7, so 7 apples remain.",
    "Write a short poem about the sea.\nThe grey sea turns and turns again, / and folds the light.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5",
    "Summarise: The meeting moved to Friday because two members were travelling on Thursday.",
    "Q: Is 91 prime? A: No. 91 = 7 x 13, so it has divisors other than 1 and itself."]


def check_ct2() -> None:
    """Raise BackendUnavailable, saying what to install, unless ctranslate2 imports."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable("CTranslate2 sampling needs the ctranslate2 package: pip install "
                                 "'veriscale[cpu]' (or pip install ctranslate2)") from e


def weights_digest(path: Path) -> str:
    """sha256 of the weight files and config.json: retrained weights convert anew."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + [path / "config.json"]:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


@torch.no_grad()
def smooth(model, tokenizer, alpha: float = 0.5) -> None:
    """SmoothQuant in place (Llama-style blocks; others are left as they are): per input channel
    j of a projection, activations / s_j and weights * s_j, s_j = sqrt(max|x_j| / max|w_j|),
    folded into the RMSNorm before q/k/v and gate/up and into up_proj's rows before down_proj."""
    layers = getattr(model.base_model, "layers", [])
    if not all(hasattr(b, "input_layernorm") and hasattr(b.mlp, "up_proj") for b in layers):
        return
    amax: dict[object, torch.Tensor] = {}

    def record(proj):
        def hook(_, inp):
            x = inp[0].detach().abs().flatten(0, -2).amax(0)
            amax[proj] = torch.maximum(amax[proj], x) if proj in amax else x
        return proj.register_forward_pre_hook(hook)

    hooks = [record(p) for b in layers for p in (b.self_attn.q_proj, b.mlp.gate_proj, b.mlp.down_proj)]
    for text in CALIBRATION:
        model(torch.tensor([tokenizer(text).input_ids]))
    for h in hooks:
        h.remove()
    for b in layers:
        for first, projs, fold in ((b.self_attn.q_proj, (b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj),
                                    b.input_layernorm.weight), (b.mlp.gate_proj, (b.mlp.gate_proj, b.mlp.up_proj),
                                    b.post_attention_layernorm.weight), (b.mlp.down_proj, (b.mlp.down_proj,),
                                    b.mlp.up_proj.weight)):
            w = torch.cat([p.weight for p in projs]).abs().amax(0).clamp(min=1e-5)
            s = (amax[first].clamp(min=1e-5) ** alpha / w ** (1 - alpha)).clamp(min=1e-5)
            for p in projs:
                p.weight.mul_(s)
            fold.div_(s if fold.dim() == 1 else s[:, None])


def convert(path: Path, out: Path, compute_type: str, tokenizer) -> None:
    """Write the CTranslate2 model of transformers directory `path` to `out` (see the docstring)."""
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoModelForCausalLM

    if compute_type == "float32":
        TransformersConverter(str(path)).convert(str(out), quantization="float32")
        return
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    smooth(model, tokenizer)
    with tempfile.TemporaryDirectory() as src:
        model.save_pretrained(src)
        tokenizer.save_pretrained(src)
        spec = TransformersConverter(src)._load()  # convert() split open, to edit the quantised weights
        spec.validate()
        spec.optimize(quantization="int8")
        variables = spec.variables()
        for name, value in variables.items():
            if name + "_scale" in variables and getattr(value, "dtype", None) == "int8":
                w, scale = value.numpy(), variables[name + "_scale"].numpy()
                w[...] = np.rint(w / 2)  # 7 bits: no int16 saturation in vpmaddubsw
                scale /= 2
        out.mkdir()
        spec.save(str(out))


def ensure_ct2(path: Path, compute_type: str, tokenizer, cache: str | Path | None = None) -> Path:
    """The cached CTranslate2 conversion of transformers directory `path` (converted once)."""
    root = Path(cache or os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()
    out = root / f"{weights_digest(path)[:16]}-{RECIPE[compute_type]}"
    if (out / "model.bin").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".convert-"))
    try:  # convert beside the target and rename: a killed conversion never looks finished
        convert(path, tmp / "m", compute_type, tokenizer)
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
                 compute_type: ComputeType = DEFAULT_COMPUTE, cache: str | Path | None = None):
        check_ct2()
        path = Path(path)
        super().__init__(tokenizer, cfg, generation_eos(path))
        self.compute_type = compute_type
        self.dir = ensure_ct2(path, compute_type, tokenizer, cache)

    def generate_ids(self, ids: list[list[int]], max_new: int, *, temperature: float,
                     generator: torch.Generator) -> list[list[int]]:
        """Per prompt id row, the generated ids, in micro-batches of cfg.batch_size rows."""
        import ctranslate2

        if max_new < 1 or not ids:
            return [[] for _ in ids]
        ctranslate2.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        gen = ctranslate2.Generator(str(self.dir), device="cpu", compute_type=self.compute_type,
                                    intra_threads=torch.get_num_threads())  # fresh: see the docstring
        rows: list[list[int]] = []
        for start in range(0, len(ids), self.cfg.batch_size):
            rows += self._batch(gen, ids[start:start + self.cfg.batch_size], max_new, temperature)
        return [self._cut(r) for r in rows] if self.cfg.stop else rows

    def _batch(self, gen, ids: list[list[int]], max_new: int, temperature: float) -> list[list[int]]:
        """One micro-batch; each run of an identical prompt goes in once with num_hypotheses =
        its length (one call per distinct length, usually one)."""
        runs: list[list[int]] = []  # [first row, length] of each run
        for i, r in enumerate(ids):
            if runs and ids[runs[-1][0]] == r:
                runs[-1][1] += 1
            else:
                runs.append([i, 1])
        greedy = temperature <= 0
        if greedy:  # all samples of a prompt are one row; CTranslate2 wants a single hypothesis
            runs = [[s + j, 1] for s, n in runs for j in range(n)]
        out: list[list[int]] = [[] for _ in ids]
        for m in sorted({n for _, n in runs}):
            group = [s for s, n in runs if n == m]
            res = gen.generate_batch([self.tok.convert_ids_to_tokens(ids[s]) for s in group], max_length=max_new,
                                     sampling_topk=1 if greedy else self.cfg.top_k,  # 0: the full distribution
                                     sampling_temperature=1.0 if greedy else temperature, num_hypotheses=m,
                                     end_token=self.eos_ids.tolist(), return_end_token=True,
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
