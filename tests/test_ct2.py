"""The CTranslate2 sampler on the tiny from-config Llama (conftest; no download), float32 compute:
greedy rows equal HFSampler's (plain, with stop strings, and under budget forcing), rows end after
an EOS or at max_new, seeds decide the rows, the first token follows the model's distribution
(full and top-k), the conversion is cached by weights digest, and `load_policy(sampler="ct2")`
gives a transformers policy sampled by CTranslate2 (or one line saying what to install)."""

import builtins
import copy

import pytest
import torch
from conftest import HF_PROMPTS as PROMPTS

pytest.importorskip("ctranslate2")

from veriscale.policy import ct2 as ct2_mod  # noqa: E402
from veriscale.policy.base import PolicyError  # noqa: E402
from veriscale.policy.ct2 import CT2Sampler  # noqa: E402
from veriscale.policy.forcing import BudgetForcing, forced_sample  # noqa: E402
from veriscale.policy.hf import HFPolicy  # noqa: E402
from veriscale.policy.hf_sampler import HFSampler  # noqa: E402
from veriscale.policy.load import load_policy  # noqa: E402
from veriscale.policy.text import HFConfig  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(model, tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ct2-cache")


def _ct2(model_dir, tokenizer, cache, compute_type="float32", **kw) -> CT2Sampler:
    return CT2Sampler(model_dir, tokenizer, HFConfig(progress=False, **kw), compute_type=compute_type, cache=cache)


def _hf(model, tokenizer, **kw) -> HFSampler:
    return HFSampler(model, tokenizer, HFConfig(progress=False, **kw))


def test_greedy_equals_hf_sampler(model, tokenizer, model_dir, cache):
    ours = _ct2(model_dir, tokenizer, cache, batch_size=3)  # two micro-batches
    assert ours.eos_ids.tolist() == _hf(model, tokenizer).eos_ids.tolist()  # both EOS ids of the model
    prompts = [p for p in PROMPTS for _ in range(2)]  # repeated prompts take the shared-prefill path
    a = ours.sample(prompts, 20, temperature=0.0)
    b = _hf(model, tokenizer).sample(prompts, 20, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.counts, b.counts) and a.texts == b.texts
    assert 0 < (a.counts < 20).sum() < len(prompts)  # some rows ended at an EOS, some ran to max_new


def test_rows_end_after_eos_or_at_max_new(tokenizer, model_dir, cache):
    s = _ct2(model_dir, tokenizer, cache)
    eos = set(s.eos_ids.tolist())
    ids = [s.encode(p) for p in PROMPTS for _ in range(6)]
    rows = s.generate_ids(ids, 12, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert len(rows) == len(ids) and all(1 <= len(r) <= 12 for r in rows)
    for r in rows:
        assert not eos & set(r[:-1])  # an EOS only ever ends a row
        assert r[-1] in eos or len(r) == 12
    assert any(r[-1] in eos for r in rows) and any(len(r) == 12 and r[-1] not in eos for r in rows)
    assert s.generate_ids(ids, 0, temperature=1.0, generator=torch.Generator()) == [[] for _ in ids]


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_seed_determinism(tokenizer, model_dir, cache, compute_type):
    s = _ct2(model_dir, tokenizer, cache, compute_type, batch_size=8)
    prompts = [p for p in PROMPTS for _ in range(3)]
    a = s.sample(prompts, 16, temperature=1.0, seed=3)
    b = s.sample(prompts, 16, temperature=1.0, seed=3)
    c = s.sample(prompts, 16, temperature=1.0, seed=4)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    assert not torch.equal(a.tokens, c.tokens)
    assert not torch.equal(a.tokens[0], a.tokens[1])  # the samples of one prompt differ
    g = torch.Generator().manual_seed(5)  # one generator over two calls: the calls differ
    ids = [s.encode(p) for p in PROMPTS]
    first = s.generate_ids(ids, 16, temperature=1.0, generator=g)
    assert first != s.generate_ids(ids, 16, temperature=1.0, generator=g)


@pytest.mark.parametrize("top_k", [0, 4])
def test_first_token_follows_the_model(model, tokenizer, model_dir, cache, top_k):
    """The first sampled token's frequencies match softmax(logits / T) (top-k restricted)."""
    T, n = 0.8, 20000
    s = _ct2(model_dir, tokenizer, cache, top_k=top_k, batch_size=n)
    ids = s.encode(PROMPTS[1])
    rows = s.generate_ids([ids] * n, 1, temperature=T, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(torch.tensor([r[0] for r in rows]), minlength=len(tokenizer)).float() / n
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1] / T
    if top_k:
        logits[logits < logits.topk(top_k).values[-1]] = float("-inf")
    p = logits.softmax(-1)
    freq = freq[:len(p)]
    assert (freq[p == 0] == 0).all()  # nothing outside the top k
    assert 0.5 * (freq - p).abs().sum() < (0.03 if top_k else 0.05)  # total variation: sampling noise


def test_stop_strings_as_hf_sampler(model, tokenizer, model_dir, cache):
    text = _hf(model, tokenizer).sample(PROMPTS, 24, temperature=0.0).texts[0]
    stop = [text[len(text) // 3: len(text) // 3 + 2]]
    a = _ct2(model_dir, tokenizer, cache, stop=stop).sample(PROMPTS, 24, temperature=0.0)
    b = _hf(model, tokenizer, stop=stop).sample(PROMPTS, 24, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts and stop[0] in a.texts[0]


def test_budget_forcing(model, tokenizer, model_dir, cache):
    cfg = BudgetForcing(cue=" so", answer_tokens=3, min_tokens=10, wait=" then", max_waits=2)
    a = forced_sample(_ct2(model_dir, tokenizer, cache), PROMPTS, 20, cfg, temperature=0.0)
    b = forced_sample(_hf(model, tokenizer), PROMPTS, 20, cfg, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts and (a.counts <= 20).all()
    r = forced_sample(_ct2(model_dir, tokenizer, cache), PROMPTS * 2, 20, cfg, temperature=1.0, seed=1)
    again = forced_sample(_ct2(model_dir, tokenizer, cache), PROMPTS * 2, 20, cfg, temperature=1.0, seed=1)
    assert torch.equal(r.tokens, again.tokens) and r.tokens.shape == (10, 20)


def test_smoothing_keeps_the_function(model, tokenizer):
    """SmoothQuant only moves scale between activations and weights: same logits in float."""
    smoothed = copy.deepcopy(model)
    ct2_mod.smooth(smoothed, tokenizer)
    assert not torch.equal(smoothed.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    ids = torch.tensor([tokenizer(PROMPTS[2]).input_ids])
    with torch.no_grad():
        assert torch.allclose(smoothed(ids).logits, model(ids).logits, atol=1e-4)


def test_int8_recipe(tokenizer, model_dir, cache):
    """The int8 recipe converts into its own cache entry, samples, and greedy mostly agrees with float32."""
    s = _ct2(model_dir, tokenizer, cache, compute_type="int8")
    assert s.dir.name.endswith(ct2_mod.RECIPE["int8"])
    r = s.sample(PROMPTS, 8, temperature=1.0, seed=0)
    assert r.tokens.shape == (len(PROMPTS), 8) and (r.counts >= 1).all()
    greedy = s.sample(PROMPTS, 8, temperature=0.0)
    ref = _ct2(model_dir, tokenizer, cache).sample(PROMPTS, 8, temperature=0.0)
    assert (greedy.tokens[:, 0] == ref.tokens[:, 0]).float().mean() >= 0.6  # mostly the float32 choice


def test_conversion_cached_by_digest(model, tokenizer, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(ct2_mod.ENV_DIR, str(tmp_path / "env"))
    first = CT2Sampler(model_dir, tokenizer, HFConfig(progress=False), compute_type="float32")
    assert first.dir.parent == tmp_path / "env" and (first.dir / "model.bin").is_file()
    assert [p.name for p in first.dir.parent.iterdir()] == [first.dir.name]  # no temp directory left

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr("ctranslate2.converters.TransformersConverter.convert", no_conversion)
    assert CT2Sampler(model_dir, tokenizer, HFConfig(), compute_type="float32").dir == first.dir
    other = tmp_path / "other"  # other weights: another cache entry
    torch.manual_seed(1)
    type(model)(model.config).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(AssertionError, match="converted again"):
        CT2Sampler(other, tokenizer, HFConfig(), compute_type="float32")


def test_load_policy_ct2(model, tokenizer, model_dir, cache, monkeypatch):
    monkeypatch.setenv(ct2_mod.ENV_DIR, str(cache))
    p = load_policy(f"hf:{model_dir}", hf=HFConfig(progress=False), sampler="ct2")
    assert isinstance(p, HFPolicy) and isinstance(p.sampler, CT2Sampler) and p.model is not None
    assert p.sampler.compute_type == ct2_mod.DEFAULT_COMPUTE
    ref = load_policy(f"hf:{model_dir}", hf=HFConfig(progress=False))
    assert p.pad_id == ref.pad_id and p.eos_id == ref.eos_id
    assert p.sample(PROMPTS, 8, temperature=1.0, seed=0).tokens.shape == (len(PROMPTS), 8)
    with pytest.raises(ValueError, match="expected one of hf, vllm, ct2"):
        load_policy(f"hf:{model_dir}", sampler="onnx")


def test_missing_ctranslate2_is_one_line(model_dir, monkeypatch):
    real = builtins.__import__

    def no_ct2(name, *a, **k):
        if name == "ctranslate2" or name.startswith("ctranslate2."):
            raise ImportError("No module named 'ctranslate2'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ct2)
    with pytest.raises(PolicyError, match=r"pip install 'veriscale\[cpu\]'") as e:
        load_policy(f"hf:{model_dir}", sampler="ct2")
    assert "\n" not in str(e.value)
