"""Budget forcing (policy/forcing.py) and the optional vLLM sampler (policy/vllm.py).

Exact cap/extend behaviour is checked on a scripted sampler whose "model" is a Python rule, so
the expected token rows can be written out; then forced_sample runs on the real tiny HFSampler
(conftest's from-config Llama), also as `HFPolicy.sample(forcing=...)` and through
`evaluate_method`, and its one-pass (inline) decoding equals the rounds greedily; and the vLLM sampler is checked without vllm: its error paths through
`load_policy(..., sampler="vllm")`, and its request building on a fake `vllm` module."""

import copy
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from conftest import HF_PROMPTS
from hypothesis import given, settings
from hypothesis import strategies as st

from veriscale.evaluate import evaluate_method
from veriscale.policy import hf as hf_module
from veriscale.policy.forcing import BudgetForcing, forced_sample
from veriscale.policy.hf import HFPolicy
from veriscale.policy.hf_sampler import HFSampler
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig, TextSampler
from veriscale.policy.vllm import BackendUnavailable, VLLMSampler, check_vllm

EOS, EOS2 = 1, 2  # <eos>, and <bos> playing a second EOS id


def _has(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@dataclass
class Run:
    """Emits WORD until the trailing run of WORDs reaches `think` (or, after the cue, `answer`)
    tokens, then an EOS; None = never ends."""

    think: int | None
    answer: int | None = None


class Scripted:
    """A sampler whose next token is a rule of the row's generated ids: `encode` files the
    prompt's rule and returns [0, rule index], so `generate_ids` can find it again."""

    def __init__(self, tok, cue: list[int], word: int, words: list[int]):
        self.tok, self.pad_id, self.eos_ids = tok, tok.pad_token_id, torch.tensor([EOS, EOS2])
        self.cue, self.word, self.words = cue, word, words
        self.rules: list = []
        self.calls: list[int] = []  # max_new of each generate_ids call

    def encode(self, prompt) -> list[int]:
        self.rules.append(prompt)
        return [0, len(self.rules) - 1]

    def next_token(self, rule, gen: list[int], g: torch.Generator) -> int:
        if isinstance(rule, float):  # EOS with this probability, else a random word
            if torch.rand((), generator=g) < rule:
                return EOS
            return self.words[int(torch.randint(len(self.words), (), generator=g))]
        run = next((j for j, t in enumerate(reversed(gen)) if t != self.word), len(gen))
        k = rule.answer if _has(gen, self.cue) else rule.think
        return EOS if k is not None and run >= k else self.word

    def generate_ids(self, ids, max_new, *, temperature, generator):
        self.calls.append(max_new)
        outs = []
        for row in ids:
            rule, out = self.rules[row[1]], []
            while len(out) < max_new and (not out or out[-1] not in (EOS, EOS2)):
                out.append(self.next_token(rule, row[2:] + out, generator))
            outs.append(out)
        return outs


@pytest.fixture(scope="module")
def ids(tokenizer):
    """cue and wait ids, and word ids that appear in neither (the tokenizer is character level)."""
    cfg = BudgetForcing()
    cue = tokenizer(cfg.cue, add_special_tokens=False).input_ids
    wait = tokenizer(cfg.wait, add_special_tokens=False).input_ids
    words = [t for t in tokenizer.convert_tokens_to_ids(list("0123456789")) if t not in cue + wait]
    return SimpleNamespace(cue=cue, wait=wait, words=words, W=words[0])


@pytest.fixture
def stub(tokenizer, ids):
    return Scripted(tokenizer, ids.cue, ids.W, ids.words)


def _rows(r) -> list[list[int]]:
    return [r.tokens[i, :r.counts[i]].tolist() for i in range(len(r))]


def test_cap_forces_the_cue_at_C(stub, ids):
    H, cfg = 32, BudgetForcing(answer_tokens=4)
    C, L, W = H - len(ids.cue) - 4, len(ids.cue), ids.W
    prompts = [Run(None), Run(C), Run(C - 1), Run(3), Run(None, answer=2)]
    r = forced_sample(stub, prompts, H, cfg, seed=0)
    capped = [W] * C + ids.cue + [W] * 4
    assert _rows(r) == [capped, capped,  # Run(C) would end at token C+1: capped
                        [W] * (C - 1) + [EOS],  # ended exactly at C tokens: untouched
                        [W] * 3 + [EOS],
                        [W] * C + ids.cue + [W, W, EOS]]  # the answer ends on its own
    assert r.tokens.shape == (5, H) and (r.counts <= H).all()
    for i in (0, 1, 4):
        assert r.tokens[i, C:C + L].tolist() == ids.cue and cfg.cue in r.texts[i]
    assert cfg.cue not in r.texts[2] + r.texts[3]
    assert stub.calls == [C, 4]  # one generate_ids call per round: think, then answer
    with pytest.raises(ValueError, match="no thinking tokens"):
        forced_sample(stub, prompts, L + 4, cfg)


def test_cap_off_rows_run_to_H(stub, ids):
    r = forced_sample(stub, [Run(None), Run(3)], 20, BudgetForcing(cap=False))
    assert _rows(r) == [[ids.W] * 20, [ids.W] * 3 + [EOS]]


def test_extension_replaces_early_eos_with_wait(stub, ids):
    W, wait = ids.W, ids.wait
    r = forced_sample(stub, [Run(3), Run(12)], 64, BudgetForcing(min_tokens=30, max_waits=2))
    # two EOS dropped for Wait, then max_waits is spent and the third EOS ends the row
    assert _rows(r)[0] == [W] * 3 + wait + [W] * 3 + wait + [W] * 3 + [EOS]
    r = forced_sample(stub, [Run(3), Run(12)], 64, BudgetForcing(min_tokens=5, max_waits=2))
    assert _rows(r) == [[W] * 3 + wait + [W] * 3 + [EOS],  # the second EOS comes after min_tokens
                        [W] * 12 + [EOS]]  # its EOS comes after min_tokens: untouched
    r = forced_sample(stub, [Run(3)], 64, BudgetForcing(min_tokens=30, max_waits=0))
    assert _rows(r) == [[W] * 3 + [EOS]]


def test_a_wait_that_does_not_fit_forces_the_cue(stub, ids):
    H, L = 32, len(ids.cue)
    C = H - L - 4
    k = C - len(ids.wait) + 1  # EOS at k: a Wait would end one past C
    r = forced_sample(stub, [Run(k), Run(k - 1)], H, BudgetForcing(answer_tokens=4, min_tokens=C))
    assert _rows(r) == [[ids.W] * k + ids.cue + [ids.W] * 4,
                        [ids.W] * (k - 1) + ids.wait + ids.cue + [ids.W] * 4]  # ends right at C: capped
    r = forced_sample(stub, [Run(H - 2)], H, BudgetForcing(cap=False, min_tokens=H))  # cap off: EOS kept
    assert _rows(r) == [[ids.W] * (H - 2) + [EOS]]


@settings(max_examples=60, deadline=None)
@given(H=st.integers(19, 48), seed=st.integers(0, 10**6), p=st.sampled_from([0.02, 0.1, 0.3]),
       cap=st.booleans(), min_tokens=st.integers(0, 48), max_waits=st.integers(0, 3),
       answer_tokens=st.integers(1, 4))
def test_token_accounting_never_exceeds_H(tokenizer, ids, H, seed, p, cap, min_tokens, max_waits, answer_tokens):
    stub = Scripted(tokenizer, ids.cue, ids.W, ids.words)
    cfg = BudgetForcing(cap=cap, min_tokens=min_tokens, max_waits=max_waits, answer_tokens=answer_tokens)
    r = forced_sample(stub, [p] * 6, H, cfg, seed=seed)
    C, L = H - len(ids.cue) - answer_tokens if cap else H, len(ids.cue)
    assert r.tokens.shape == (6, H) and (r.counts <= H).all()
    assert torch.equal(r.mask, torch.arange(H)[None] < r.counts[:, None])
    for row in _rows(r):
        assert all(t not in (EOS, EOS2) for t in row[:-1])  # only the last token can be an EOS
        waits = sum(row[i:i + len(ids.wait)] == ids.wait for i in range(len(row)))
        assert waits <= max_waits
        cue_at = next((i for i in range(len(row)) if row[i:i + L] == ids.cue), None)
        if cap and len(row) > C:  # past the cap only after the cue, and then by the answer alone
            assert cue_at is not None and cue_at <= C and len(row) <= cue_at + L + answer_tokens
        if cap and cue_at is None:  # not capped: ended by its own EOS (the stub has no stop strings)
            assert row[-1] == EOS and len(row) <= C
        if not cap:
            assert cue_at is None and (len(row) == H or row[-1] == EOS)


def test_same_seed_same_rollouts(stub, tokenizer, ids):
    cfg = BudgetForcing(min_tokens=20, answer_tokens=3)
    a, b, c = (forced_sample(Scripted(tokenizer, ids.cue, ids.W, ids.words), [0.1] * 8, 40, cfg, seed=s)
               for s in (5, 5, 6))
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts and a.offsets == b.offsets
    assert not torch.equal(a.tokens, c.tokens)


@pytest.fixture(scope="module")
def no_eos_model(model):
    """The tiny Llama with its EOS logits pushed to -1e4 (a biased lm_head): it never ends."""
    m = copy.deepcopy(model)
    head = torch.nn.Linear(m.lm_head.in_features, m.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(m.lm_head.weight)
        head.bias.zero_()
        head.bias[m.generation_config.eos_token_id] = -1e4
    m.lm_head = head
    return m


def test_real_sampler_cap_and_cap_off(no_eos_model, model, tokenizer, ids):
    H, cfg = 30, BudgetForcing(answer_tokens=3)
    C, L = H - len(ids.cue) - 3, len(ids.cue)
    s = HFSampler(no_eos_model, tokenizer, HFConfig(progress=False))  # one micro-batch: see below
    off = forced_sample(s, HF_PROMPTS * 2, H, BudgetForcing(cap=False), seed=1)
    assert (off.counts == H).all()
    on = forced_sample(s, HF_PROMPTS * 2, H, cfg, seed=1)
    assert (on.counts == H).all() and (on.tokens[:, C:C + L] == torch.tensor(ids.cue)).all()
    # same thinking, cut at C (with several micro-batches, later ones would draw other numbers)
    assert torch.equal(on.tokens[:, :C], off.tokens[:, :C])
    assert all(cfg.cue in t for t in on.texts)
    # cap off, no extension: exactly the sampler's own rollouts, on a model that does end
    s = HFSampler(model, tokenizer, HFConfig(progress=False))
    plain, forced = s.sample(HF_PROMPTS * 3, 24, seed=2), forced_sample(s, HF_PROMPTS * 3, 24,
                                                                      BudgetForcing(cap=False), seed=2)
    assert torch.equal(plain.tokens, forced.tokens) and plain.texts == forced.texts
    assert (plain.counts < 24).any()


def test_real_sampler_extension_and_determinism(model, tokenizer, ids):
    s = HFSampler(model, tokenizer, HFConfig(progress=False))
    cfg = BudgetForcing(min_tokens=24, max_waits=2, answer_tokens=3)
    a = forced_sample(s, HF_PROMPTS * 2, 40, cfg, seed=3)
    b = forced_sample(s, HF_PROMPTS * 2, 40, cfg, seed=3)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts and (a.counts <= 40).all()
    waits = [sum(r[i:i + len(ids.wait)] == ids.wait for i in range(len(r))) for r in _rows(a)]
    assert max(waits) >= 1 and max(waits) <= 2  # the tiny model ends early, so some rows got a Wait
    assert all(cfg.wait in t for t, w in zip(a.texts, waits) if w)


@pytest.mark.parametrize("cfg", [BudgetForcing(min_tokens=24, max_waits=2, answer_tokens=3),
                                 BudgetForcing(min_tokens=30, max_waits=3, answer_tokens=2, wait=" Wait, check"),
                                 BudgetForcing(cap=False, min_tokens=20)])
@pytest.mark.parametrize("batch_size", [3, 64])
def test_one_pass_equals_rounds_at_temperature_0(model, tokenizer, monkeypatch, cfg, batch_size):
    """The transformers sampler forces inline, in one generate call; the rounds (the reference)
    give the same rows greedily, with rows joining running batches (batch_size 3) or not."""
    s = HFSampler(model, tokenizer, HFConfig(progress=False, batch_size=batch_size))
    calls = []
    monkeypatch.setattr(s, "generate_ids", lambda *a, _g=s.generate_ids, **k: calls.append(1) or _g(*a, **k))
    one = forced_sample(s, HF_PROMPTS * 2, 36, cfg, temperature=0.0)
    passes = len(calls)
    ref = forced_sample(s, HF_PROMPTS * 2, 36, cfg, temperature=0.0, rounds=True)
    assert passes == 1 and len(calls) > 2  # the rounds took several calls
    assert _rows(one) == _rows(ref) and one.texts == ref.texts
    assert any(_has(r, tokenizer(cfg.wait, add_special_tokens=False).input_ids) for r in _rows(one))
    assert any(_has(r, tokenizer(cfg.cue, add_special_tokens=False).input_ids) for r in _rows(one)) == cfg.cap


def test_policy_sample_with_forcing_is_forced_sample(lm_dir, gym_task):
    """`HFPolicy.sample(forcing=...)` is forced_sample on its own sampler, and evaluate_method
    forces each budget's draw at that budget."""
    p = load_policy(f"hf:{lm_dir}", hf=HFConfig(progress=False))
    cfg = BudgetForcing(min_tokens=12, answer_tokens=3)
    prompts = gym_task.prompts("test", 6, 0)
    a = p.sample(prompts, 20, seed=7, forcing=cfg)
    b = forced_sample(p.sampler, prompts, 20, cfg, seed=7)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    rows = evaluate_method("base", p, gym_task, prompts, [16, 20], forcing=cfg)
    assert [r["budget"] for r in rows] == [16, 20] and all(r["tokens"] <= r["budget"] for r in rows)
    with pytest.raises(ValueError, match="expert"):
        evaluate_method("expert", p, gym_task, prompts, [16], forcing=cfg)


def test_check_vllm_names_the_extra(monkeypatch, model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'veriscale\[vllm\]'"):
        check_vllm()
    with pytest.raises(BackendUnavailable, match="veriscale"):
        load_policy(f"hf:{tmp_path}", sampler="vllm")
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU"):
        check_vllm()
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU"):
        load_policy(f"hf:{tmp_path}", sampler="vllm")
    with pytest.raises(ValueError, match="sampler"):  # an unknown sampler, before any path is looked at
        load_policy(f"hf:{tmp_path / 'missing'}", sampler="tgi")


def test_vllm_sampler_requests_and_kept_eos(monkeypatch, model, tokenizer, tmp_path):
    """On a fake vllm: the engine gets the local path, one seeded request per row, and the EOS
    that ended a row is kept whether or not vLLM returned it."""
    made = {}

    class LLM:
        def __init__(self, **kw):
            made["llm"] = kw

        def generate(self, prompts, params, use_tqdm):
            made["prompts"], made["params"] = prompts, params
            return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=t, stop_reason=s, finish_reason=f)])
                    for t, s, f in made["script"]]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    def no_torch_model(*a):
        raise AssertionError("the torch model loaded, although vLLM samples")

    monkeypatch.setattr(hf_module, "load_lm", no_torch_model)
    p = load_policy(f"hf:{tmp_path}", hf=HFConfig(progress=False, stop=["so"]), sampler="vllm")
    s = p.sampler
    assert isinstance(p, HFPolicy) and isinstance(s, VLLMSampler) and isinstance(s, TextSampler)
    assert p.pad_id == s.pad_id and p.encode_prompts(["a"]) == [s.encode("a")]
    assert made["llm"] == {"model": str(tmp_path), "tokenizer": str(tmp_path), "dtype": "float32", "seed": 0}
    eos2 = model.generation_config.eos_token_id[1]
    assert s.eos_ids.tolist() == HFSampler(model, tokenizer).eos_ids.tolist()
    made["script"] = [([5, 6], eos2, "stop"),  # stop token omitted: appended
                      ([5, EOS], None, "stop"),  # the tokenizer's EOS, returned: kept once
                      ([5], None, "stop"),  # ... omitted: appended
                      ([5, 6, 7], None, "length"),  # ran out: nothing added
                      ([85, 81], "so", "stop")]  # a stop string: nothing added
    r = p.sample(["a", "a", "b", "c", "d"], 3, temperature=0.7, seed=4)  # the policy samples with vLLM
    assert _rows(r) == [[5, 6, eos2], [5, EOS], [5, EOS], [5, 6, 7], [85, 81]]
    assert made["prompts"] == [{"prompt_token_ids": s.encode(p)} for p in "aabcd"]
    p = made["params"][0]
    assert (p.temperature, p.max_tokens, p.stop, p.top_k, p.stop_token_ids) == (0.7, 3, ["so"], -1,
                                                                                 s.eos_ids.tolist())
    assert p.include_stop_str_in_output and not p.skip_special_tokens
    seeds = [q.seed for q in made["params"]]
    assert len(set(seeds)) == 5  # the two rows of prompt "a" must not share a seed
    s.sample(["a"] * 5, 3, seed=4)
    assert [q.seed for q in made["params"]] == seeds  # drawn from the seeded generator
