"""`load_policy(spec)`: the one way a policy is loaded, whatever it is.

A spec is
- a run directory written by veriscale (pretraining, SFT, RL; tiny GPT or transformers): its
  veriscale.json says which kind, and the weights' digest recorded there is checked;
- `hf:PATH`, a local transformers model directory (a user's own model), or a GGUF file,
  converted once as SmolLM2's is (policy/smollm2.py);
- `smollm2`, the offline SmolLM2-135M-Instruct (policy/smollm2.py);
- a bare path to a transformers directory without veriscale.json.
A transformers policy samples with `sampler`: "hf" (transformers, policy/hf.py), "vllm" (a GPU,
policy/vllm.py) or "ct2" (CTranslate2 on CPU, policy/ct2.py); with "ct2" the torch model still
loads, since learners and verifiers read it.
Every failure (missing, truncated, corrupted or pickle-only weights, a directory of the wrong
kind) is a `PolicyError` with one line naming the path and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from veriscale.policy.base import META, Policy, PolicyError, check_weights, read_meta
from veriscale.policy.hf import HFPolicy, first_line, load_hf
from veriscale.policy.smollm2 import SmolLM2Missing, converted_gguf, ensure_converted
from veriscale.policy import SAMPLERS, SamplerName
from veriscale.policy.text import HFConfig
from veriscale.policy.tiny import load_gpt

POLICY_STAGES = ("pretrain", "sft", "rl", "base")
SPEC_HELP = "a run directory, hf:PATH (a local transformers model) or smollm2"


def load_policy(spec: str | Path, *, hf: HFConfig | None = None, sampler: SamplerName = "hf",
                stages: tuple[str, ...] = POLICY_STAGES) -> Policy:
    """The policy named by `spec`; `stages` are the run stages accepted (a verifier's run
    directory is a policy only to the verifier loader). `hf` and `sampler` apply to
    transformers models; the tiny GPT samples with its own engine."""
    spec = str(spec)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if spec == "smollm2":
        try:
            return _load_hf(spec, ensure_converted(), hf, sampler)
        except SmolLM2Missing as e:
            raise PolicyError(str(e)) from None
    path = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        path = _from_gguf(path)
    if not path.is_dir():
        raise PolicyError(f"{path}: no such directory (expected {SPEC_HELP})")
    meta = read_meta(path)
    if meta is None:
        if not _is_transformers_dir(path):
            raise PolicyError(f"{path}: not a policy (no {META} and no transformers config.json; expected {SPEC_HELP})")
        return _load_hf(spec, path, hf, sampler)
    stage = meta.get("stage")
    if stage not in stages:
        raise PolicyError(f"{path}: a {stage!r} run directory, not a policy of stage {' / '.join(stages)}")
    if meta.get("policy") == "gpt":
        return load_gpt(path, meta)
    if meta.get("policy") == "hf":
        check_weights(path, meta)
        return _load_hf(spec, path, hf, sampler)
    raise PolicyError(f"{path / META}: unknown policy kind {meta.get('policy')!r}")


def _from_gguf(path: Path) -> Path:
    """The transformers directory converted from a GGUF file (policy/smollm2.py), or PolicyError."""
    try:
        return converted_gguf(path)
    except ImportError as e:
        raise PolicyError(f"{path}: converting a GGUF file needs {e.name or 'gguf'}: pip install gguf accelerate") \
            from None
    except Exception as e:  # noqa: BLE001 (the GGUF readers raise struct, value, key... errors for a bad file)
        raise PolicyError(f"{path}: cannot convert this GGUF file to transformers ({first_line(e)}); convert it "
                          "yourself and pass hf:DIR") from None


def _load_hf(spec: str, path: Path, hf: HFConfig | None, sampler: str) -> HFPolicy:
    """load_hf, with a CT2Sampler over the same directory in place of HFSampler for "ct2"."""
    if sampler != "ct2":
        return load_hf(spec, path, hf, sampler)
    from veriscale.policy.ct2 import CT2Sampler, check_ct2
    from veriscale.policy.vllm import BackendUnavailable

    try:
        check_ct2()  # before the model loads
    except BackendUnavailable as e:
        raise PolicyError(str(e)) from None
    policy = load_hf(spec, path, hf, "hf")
    try:
        policy.sampler = CT2Sampler(path, policy.tok, policy.cfg)
    except (NotImplementedError, ValueError, RuntimeError, OSError) as e:  # e.g. an unsupported architecture
        raise PolicyError(f"{path}: cannot convert to CTranslate2 ({first_line(e)})") from None
    return policy


def _is_transformers_dir(path: Path) -> bool:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg)
