"""The LLM-track learners on a tiny from-config Llama with a locally trained tokenizer (no
download): SFT trains on completion tokens only and lowers held-out NLL (also with LoRA); the
outcome verifier's batched scores equal the per-example reference and training lowers its
held-out loss; RL's micro-batched gradient equals the full batch's; and a tiny LLM study runs
end to end through `reproduce`'s machinery with every budget respected."""

import copy
import json

import pytest
import torch

from veriscale.config import from_dict
from veriscale.learn.text_lm import LogitsOf, TrainableSnapshot, completion_batch, freeze_below, pack, read_text_run
from veriscale.learn.text_rl import TextRLConfig, accumulate_gradient, train_text_rl
from veriscale.learn.text_samples import read_samples, write_samples
from veriscale.learn.text_sft import TextSFTConfig, expert_traces, search_trace, train_text_sft
from veriscale.learn.text_verifier import TextVerifier, TextVerifierConfig, load_text_verifier, train_text_verifier
from veriscale.policy.hf import HFConfig, load_hf_policy, text_rollouts


def _sampler(lm_dir):
    return load_hf_policy(lm_dir, HFConfig(progress=False))


def test_sft_batch_masks_prompt_tokens_exactly():
    prompts, completions = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14, 1]]
    inputs, targets, mask = completion_batch(*pack(prompts, completions, pad_id=0))
    assert inputs.shape == targets.shape == mask.shape == (2, 5)
    for i, c in enumerate(completions):  # the loss reads exactly the completion tokens, in order
        assert targets[i][mask[i]].tolist() == c
    assert not mask[0, :2].any() and not mask[1, :1].any()  # targets inside the prompt carry no loss
    assert not mask[0, 4]  # padding carries no loss


def test_search_trace_keeps_failures_before_the_first_success():
    attempts = [("a", False), ("b", False), ("c", True), ("d", False), ("e", True)]
    assert search_trace(attempts, 3, "|") == "a|b|c"
    assert search_trace(attempts, 1, "|") == "b|c"
    assert search_trace(attempts, 0, "|") == "c"
    assert search_trace([("a", False)], 3, "|") is None


@pytest.mark.parametrize("lora", [0, 4])
def test_sft_lowers_heldout_nll_and_saves_a_plain_model(lm_dir, gym_task, tmp_path, lora):
    cfg = from_dict(TextSFTConfig, {"n": 24, "heldout": 0.25, "patience": 0, "lora_r": lora,
                                    "optim": {"steps": 30, "lr": 1e-1 if lora else 1e-2, "eval_every": 10}})
    out = train_text_sft(_sampler(lm_dir), gym_task, cfg, tmp_path / "sft")
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["heldout_nll"] for r in log if "heldout_nll" in r]
    assert min(evals[1:]) < evals[0] - (0.1 if lora else 0.3)  # LoRA on a width-32 model learns slower
    assert read_text_run(out)["stage"] == "sft" and not list(out.glob("adapter_*"))
    trained = load_hf_policy(out).model.state_dict()
    base = _sampler(lm_dir).model.state_dict()
    assert set(trained) == set(base) and any(not torch.equal(trained[k], base[k]) for k in base)


def _labelled_samples(lm_dir, task, tmp_path, n=16):
    """Two samples per prompt, one right and one wrong, labelled by the real checker."""
    s = _sampler(lm_dir)
    problems = task.prompts("train", n, 0)
    texts = [t for p in problems for t in (p.solution, f"{p.text[10:15]} Final answer: {int(p.gold) + 1}")]
    ids = [s.tok(t, add_special_tokens=False).input_ids + [s.tok.eos_token_id] for t in texts]
    ro = text_rollouts(s.tok, ids, max(map(len, ids)), s.pad_id)
    T = task.check([p for p in problems for _ in range(2)], ro)
    rows = [{"prompt": k // 2, "sample": k % 2, "ids": ids[k], "text": ro.texts[k],
             "T": int(T[k]) if T[k] <= len(ids[k]) else None} for k in range(len(ids))]
    assert [r["T"] is not None for r in rows] == [True, False] * n
    write_samples(tmp_path / "samples", rows, {"n": n, "data_seed": 0})
    return tmp_path / "samples", problems, ro


def test_verifier_scores_match_reference_and_training_lowers_heldout_loss(lm_dir, gym_task, tmp_path):
    samples, problems, ro = _labelled_samples(lm_dir, gym_task, tmp_path)
    assert len(read_samples(samples)) == 32
    cfg = from_dict(TextVerifierConfig, {"heldout": 0.25, "patience": 0, "train_layers": 0,
                                         "optim": {"steps": 40, "lr": 1e-2, "eval_every": 10}})
    out = train_text_verifier(_sampler(lm_dir), gym_task, cfg, tmp_path / "verifier", samples_dir=samples)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["heldout_loss"] for r in log if "heldout_loss" in r]
    assert min(losses[1:]) < losses[0] - 0.05
    verifier = load_text_verifier(out, HFConfig(progress=False))
    rep = [p for p in problems for _ in range(2)]
    fast = verifier.score(rep, ro, batch_size=5)
    assert torch.allclose(fast, verifier.score_reference(rep, ro), atol=1e-5)
    final = fast.gather(1, (ro.counts - 1)[:, None]).squeeze(1).view(-1, 2)
    assert (final[:, 0] > final[:, 1]).float().mean() > 0.7  # the right sample usually scores higher


def test_verifier_prefix_positions_follow_each_prompt_length(lm_dir):
    s = _sampler(lm_dir)
    v = TextVerifier(s.model, s.encode, s.pad_id)
    torch.nn.init.normal_(v.value.weight)
    ro = text_rollouts(s.tok, [[5, 6, 7], [8]], 4, s.pad_id)
    prompts = ["Calculate 1 + 2.", "What is the total sum of 3 and 4 then?"]  # different prompt lengths
    assert torch.allclose(v.score(prompts, ro), v.score_reference(prompts, ro), atol=1e-5)


def test_rl_micro_batches_give_the_full_batch_gradient(lm_dir):
    s = _sampler(lm_dir)
    ref = LogitsOf(copy.deepcopy(s.model))
    net = LogitsOf(s.model)
    with torch.no_grad():  # move the policy off the reference, so the KL term has a gradient too
        for p in s.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    prompts = [[5 + i] * (2 + i % 3) for i in range(8)]
    completions = [torch.randint(3, 100, (1 + (3 * i) % 7,), generator=g).tolist() for i in range(8)]
    batch = completion_batch(*pack(prompts, completions, s.pad_id))
    adv = torch.randn(8, generator=g)
    grads, stats = [], []
    for mb in (1, 3, 8):
        s.model.zero_grad(set_to_none=True)
        cfg = from_dict(TextRLConfig, {"micro_batch": mb, "beta": 0.5})
        stats.append(accumulate_gradient(net, ref, *batch, adv, cfg))
        grads.append(torch.cat([p.grad.flatten() for p in s.model.parameters()]))
    for other, st in zip(grads[1:], stats[1:]):
        assert torch.allclose(grads[0], other, atol=1e-6)
        assert st["loss"] == pytest.approx(stats[0]["loss"], abs=1e-6)
        assert st["kl"] == pytest.approx(stats[0]["kl"], abs=1e-7) and st["kl"] > 0


def test_rl_step_runs_and_logs(lm_dir, gym_task, tmp_path):
    cfg = from_dict(TextRLConfig, {"n": 8, "prompts_per_step": 2, "G": 4, "steps": 2, "lr": 1e-3})
    out = train_text_rl(_sampler(lm_dir), gym_task, cfg, 24, tmp_path / "rl")
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 1]
    for r in recs:
        assert 0 <= r["reward"] <= 1 and 0 <= r["zero_variance_share"] <= 1 and r["tokens"] > 0
    assert read_text_run(out)["stage"] == "rl"


def test_sft_on_search_traces_uses_only_prompts_with_a_success(lm_dir, gym_task, tmp_path):
    samples, problems, _ = _labelled_samples(lm_dir, gym_task, tmp_path)
    rows = read_samples(samples)
    write_samples(tmp_path / "half", [r for r in rows if r["prompt"] % 2 == 0 or r["T"] is None],
                  {"n": 16, "data_seed": 0})  # odd prompts keep only their failed sample
    cfg = from_dict(TextSFTConfig, {"n": 16, "expert": "search", "bridge": " Wait ", "heldout": 0.25,
                                    "optim": {"steps": 2}})
    s = _sampler(lm_dir)
    out = train_text_sft(s, gym_task, cfg, tmp_path / "sft", samples_dir=tmp_path / "half")
    assert read_text_run(out)["traces"] == 8
    traces = expert_traces(problems, cfg, s.tok, read_samples(tmp_path / "half"))
    assert [i for i, _ in traces] == list(range(0, 16, 2))
    for i, text in traces:  # the wrong attempt (sample 0 is right, so no failure precedes it)
        assert text == s.tok.decode(rows[2 * i]["ids"], skip_special_tokens=True).strip()


def test_trainable_snapshot_restores_only_trainable_weights(lm_dir):
    s = _sampler(lm_dir)
    freeze_below(s.model, 1)  # only the top block, the final norm and the head train
    snap = TrainableSnapshot(s.model)
    assert snap.params and all(p.requires_grad for p in snap.params.values())
    assert not any(k.startswith("model.layers.0.") or "embed" in k for k in snap.params)
    before = {k: p.detach().clone() for k, p in s.model.named_parameters()}
    snap.take()
    with torch.no_grad():
        for p in snap.params.values():
            p.add_(1.0)
    snap.restore()
    assert all(torch.equal(p, before[k]) for k, p in s.model.named_parameters())
