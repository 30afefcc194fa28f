"""The learners on a transformers policy: a tiny from-config Llama with a locally trained
tokenizer (conftest's `lm_dir`, no download) behind the one `Policy` interface. Training rows
put loss on completion tokens only; SFT on gold solutions lowers the validation and test NLL
(also with LoRA) and saves a plain model; search-trace SFT trains only on prompts with a
success; samples files round-trip and name the line of a malformed row; the verifier's batched
scores equal the per-example reference and training lowers its validation loss; RL's
micro-batched gradient equals the full batch's and a step logs its records."""

import json

import pytest
import torch

from veriscale.config import from_dict
from veriscale.learn import samples as samples_
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import LogitsOf, Snapshot, eval_nll, masked_ce
from veriscale.learn.rl import RLConfig, accumulate_gradient, train_rl
from veriscale.learn.sft import SFTConfig, search_texts, search_trace, train_sft
from veriscale.learn.verifier import (Verifier, VerifierConfig, heldout_metrics, labelled, load_verifier, prefix_metrics,
                                      train_verifier)
from veriscale.policy.base import PolicyError, read_meta
from veriscale.policy.hf import HFPolicy
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import NEVER, id_rollouts


def _policy(path) -> HFPolicy:
    return load_policy(f"hf:{path}", hf=HFConfig(progress=False))


def _log(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_rows_mask_prompt_tokens_exactly():
    prompts, completions = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14, 1]]
    inputs, targets, mask = lm_rows(prompts, id_rollouts(completions, 4, pad_id=0), pad_id=0)
    assert inputs.shape == targets.shape == mask.shape == (2, 6)  # longest prompt + rollout width - 1
    for i, (p, c) in enumerate(zip(prompts, completions)):  # the loss reads exactly the completion, in order
        assert targets[i][mask[i]].tolist() == c
        assert inputs[i, :len(p)].tolist() == p  # each trace starts where its own prompt ends
        assert mask[i].nonzero().squeeze(1).tolist() == list(range(len(p) - 1, len(p) - 1 + len(c)))
    assert not mask[0, :2].any() and not mask[1, :1].any()  # targets inside the prompt carry no loss
    assert not mask[0, 4:].any()  # padding carries no loss


def test_search_trace_keeps_failures_before_the_first_success():
    attempts = [("a", False), ("b", False), ("c", True), ("d", False), ("e", True)]
    assert search_trace(attempts, 3, "|") == "a|b|c"
    assert search_trace(attempts, 1, "|") == "b|c"
    assert search_trace(attempts, 0, "|") == "c"
    assert search_trace([("a", False)], 3, "|") is None
    assert search_trace(attempts, 1, "|", checks=1, check_bridge="+") == "b|c+e"  # goes on after a success
    assert search_trace(attempts, 1, "|", checks=5, check_bridge="+") == "b|c+e"  # only successes follow
    assert search_trace([("a", True)], 1, "|", checks=2, check_bridge="+") == "a"


@pytest.mark.parametrize("lora", [0, 4])
def test_sft_lowers_validation_nll_and_saves_a_plain_model(lm_dir, gym_task, tmp_path, lora):
    cfg = from_dict(SFTConfig, {"n": 24, "val_traces": 16, "test_traces": 16, "patience": 0, "lora_r": lora,
                                "optim": {"steps": 30, "lr": 1e-1 if lora else 1e-2, "eval_every": 10}})
    out = train_sft(_policy(lm_dir), gym_task, cfg, tmp_path / "sft")
    evals = [r["val_nll"] for r in _log(out) if "val_nll" in r]
    assert len(evals) == 4  # the initial policy (step -1), then every 10 steps
    assert min(evals[1:]) < evals[0] - (0.1 if lora else 0.3)  # LoRA on a width-32 model learns slower
    meta = read_meta(out)
    assert meta["stage"] == "sft" and meta["policy"] == "hf" and meta["task_spec"] == "gym:basic_arithmetic"
    assert meta["training_traces"] == 24 and meta["validation_traces"] == 16
    assert meta["val_nll_before"] == evals[0] and meta["val_nll_after"] == min(evals)  # the best weights are kept
    assert meta["test_nll_after"] < meta["test_nll_before"]  # gold solutions of held-out test prompts
    assert not list(out.glob("adapter_*"))  # LoRA is merged: a plain transformers directory
    trained = load_policy(out).model.state_dict()
    base = _policy(lm_dir).model.state_dict()
    assert set(trained) == set(base) and any(not torch.equal(trained[k], base[k]) for k in base)


def test_sft_validation_prompts_are_other_training_prompts(gym_task):
    train = gym_task.prompts("train", 24, 0)
    val = gym_task.validation_prompts(train, 16, 7919)
    test = {p.text for p in gym_task.prompts("test", 16, 0)}
    assert len(val) == 16 and not {p.text for p in val} & ({p.text for p in train} | test)


def _rows_of(policy, task, problems, right: list[bool]):
    """Rollouts of each problem's gold solution (right) or a well-formed wrong answer, EOS ended."""
    texts = [p.solution if ok else f"{p.text[10:15]} Final answer: {int(p.gold) + 1}"
             for p, ok in zip(problems, right)]
    return [policy.encode_completion(t) for t in texts]


def _labelled_samples(policy, task, pattern=(True, False), n=16, n_val=8) -> samples_.Samples:
    """r = len(pattern) samples per prompt (sample j right iff pattern[j]; a callable pattern
    gives prompt i's), on n training prompts and n_val validation prompts, labelled by the real
    checker; prompts drawn as `samples_.read` draws them again (data_seed 0)."""
    prompts = task.prompts("train", n, 0)
    val = task.validation_prompts(prompts, n_val, 0 + 7919)
    r = len(pattern(0) if callable(pattern) else pattern)
    split = []
    for problems in (prompts, val):
        rep = [p for p in problems for _ in range(r)]
        right = [ok for i in range(len(problems)) for ok in (pattern(i) if callable(pattern) else pattern)]
        split.append((rep, right, _rows_of(policy, task, rep, right)))
    width = max(len(ids) for _, _, rows in split for ids in rows)  # both splits at one width, as drawn
    out = []
    for rep, right, rows in split:
        ro = policy.rollouts(rows, width)
        T = task.check(rep, ro)
        assert (T < NEVER).tolist() == right  # the real checker agrees with the construction
        out += [ro, T]
    return samples_.Samples(prompts, out[0], out[1], val, out[2], out[3], r)


def test_samples_file_round_trip_and_malformed_rows(lm_dir, gym_task, tmp_path):
    policy = _policy(lm_dir)
    s = _labelled_samples(policy, gym_task)
    path = samples_.write(tmp_path / "samples", s, {"n": 16, "data_seed": 0, "val_prompts": 8})
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 2 * 16 + 2 * 8 and {r["split"] for r in rows} == {"train", "val"}
    assert read_meta(tmp_path / "samples")["stage"] == "samples"
    back = samples_.read(tmp_path / "samples", gym_task, policy)
    assert back.prompts == s.prompts and back.val_prompts == s.val_prompts and back.r == 2
    for a, b in ((back.rollouts, s.rollouts), (back.val_rollouts, s.val_rollouts)):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.counts, b.counts) and a.texts == b.texts
    assert torch.equal(back.T, s.T) and torch.equal(back.val_T, s.val_T)
    assert back.repeated("train") == [p for p in s.prompts for _ in range(2)]
    lines = path.read_text().splitlines()
    for bad, match in [("{not json", "not JSON"), (json.dumps({**rows[2], "T": "3"}), "field 'T'"),
                       (json.dumps({**rows[2], "split": "test"}), "split")]:
        path.write_text("\n".join(lines[:2] + [bad] + lines[3:]) + "\n")
        with pytest.raises(samples_.SamplesFileError, match=match) as e:
            samples_.read(tmp_path / "samples", gym_task, policy)
        assert str(e.value).startswith(f"{path}:3: ")


def test_verifier_scores_match_reference_and_training_lowers_validation_loss(lm_dir, gym_task, tmp_path):
    policy = _policy(lm_dir)
    s = _labelled_samples(policy, gym_task)
    W = s.rollouts.tokens.shape[1]
    cfg = from_dict(VerifierConfig, {"n": 16, "horizon": W, "patience": 0, "train_layers": 0,
                                     "optim": {"steps": 40, "lr": 1e-2, "eval_every": 10}})
    out = train_verifier(policy, gym_task, cfg, tmp_path / "verifier", samples=s)
    losses = [r["heldout_loss"] for r in _log(out) if "heldout_loss" in r]
    assert min(losses[1:]) < losses[0] - 0.05  # on the validation prompts' samples, never trained on
    meta = read_meta(out)
    assert meta["stage"] == "verifier" and meta["horizon"] == W and (out / "value_head.safetensors").is_file()
    assert meta["training_traces"] == 32 and meta["validation_traces"] == 16
    with pytest.raises(PolicyError, match="verifier"):  # a verifier's body is not a policy to sample
        load_policy(out)
    verifier = load_verifier(out, hf=HFConfig(progress=False))
    rep = s.repeated("train")
    fast = verifier.score(rep, s.rollouts, batch_size=5)
    assert torch.allclose(fast, verifier.score_reference(rep, s.rollouts), atol=1e-5)
    final = fast.gather(1, (s.rollouts.counts - 1)[:, None]).squeeze(1).view(-1, 2)
    assert (final[:, 0] > final[:, 1]).float().mean() > 0.7  # the right sample usually scores higher


def test_cut_batches_match_the_full_width_computation(lm_dir, gym_task):
    """The verifier's held-out metrics and SFT's NLL, computed on rows sorted by length and cut to
    their width (SFT's head run only where there is loss), equal the plain full-width forward."""
    policy = _policy(lm_dir)
    s = _labelled_samples(policy, gym_task, pattern=lambda i: [i % 3 == 0, True])  # rows of two lengths
    verifier = Verifier(policy)
    with torch.no_grad():
        verifier.value.weight.normal_()  # a non-zero head, so every prefix scores differently
    held = labelled(verifier, gym_task, s.repeated("val"), s.val_rollouts)
    assert len(set(s.val_rollouts.counts.tolist())) > 1  # rows of different lengths: the cut matters
    with torch.no_grad():
        full = prefix_metrics(verifier(held["seq"]).gather(1, held["pos"]), held["labels"], held["mask"], "log")
    assert heldout_metrics(verifier, held, "log", batch_size=3) == pytest.approx(full, abs=1e-5, nan_ok=True)
    x, y, m = lm_rows(policy.encode_prompts(s.repeated("val")), s.val_rollouts, policy.pad_id)
    net = LogitsOf(policy)
    with torch.no_grad():
        plain = masked_ce(net(x), y, m).item()
        nll, count = net.nll(x, y, m)
    assert (nll / count).item() == pytest.approx(plain, rel=1e-5) and int(count) == int(m.sum())
    assert eval_nll(net, x, y, m, batch_size=3) == pytest.approx(plain, rel=1e-5)


def test_text_learners_need_a_horizon(lm_dir, gym_task, tmp_path):
    """A text policy has no task horizon: the verifier and RL refuse to guess the H of their rollouts."""
    policy = _policy(lm_dir)
    with pytest.raises(ValueError, match="horizon"):
        train_verifier(policy, gym_task, from_dict(VerifierConfig, {"n": 2}), tmp_path / "v",
                       samples=_labelled_samples(policy, gym_task, n=2, n_val=2))
    with pytest.raises(ValueError, match="horizon"):
        train_rl(policy, gym_task, from_dict(RLConfig, {"n": 2, "prompts_per_step": 2, "G": 2}), tmp_path / "r")


def test_verifier_prefix_positions_follow_each_prompt_length(lm_dir):
    policy = _policy(lm_dir)
    v = Verifier(policy)
    torch.nn.init.normal_(v.value.weight)
    ro = policy.rollouts([[5, 6, 7], [8]], 4)
    prompts = ["Calculate 1 + 2.", "What is the total sum of 3 and 4 then?"]  # different prompt lengths
    assert len(set(map(len, policy.encode_prompts(prompts)))) == 2
    assert torch.allclose(v.score(prompts, ro), v.score_reference(prompts, ro), atol=1e-5)
    hard = Verifier(policy, hard=True)
    hard.value.load_state_dict(v.value.state_dict())
    assert set(hard.score(prompts, ro).unique().tolist()) <= {0.0, 1.0}  # Algorithm 2 thresholds at 1/2


def test_rl_micro_batches_and_head_chunks_give_the_full_batch_gradient(lm_dir):
    """Micro-batches of traces and checkpointed chunks of the head and loss (memory: chunk x
    vocab) change the summation order only."""
    policy = _policy(lm_dir)
    ref = policy.frozen_copy()
    assert not any(p.requires_grad for p in ref.model.parameters())
    net, ref_net = LogitsOf(policy), LogitsOf(ref)
    with torch.no_grad():  # move the policy off the reference, so the KL term has a gradient too
        for p in policy.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    prompts = [[5 + i] * (2 + i % 3) for i in range(8)]
    completions = [torch.randint(3, 100, (1 + (3 * i) % 7,), generator=g).tolist() for i in range(8)]
    batch = lm_rows(prompts, id_rollouts(completions, 7, policy.pad_id), policy.pad_id)
    adv = torch.randn(8, generator=g)
    grads, stats = [], []
    V = len(policy.tok)
    for mb, chunk in ((0, 0), (1, 0), (3, 0), (8, 0), (0, 5), (3, 2), (0, 1)):  # chunk 0: all at once
        policy.model.zero_grad(set_to_none=True)
        cfg = from_dict(RLConfig, {"micro_batch": mb, "head_budget": chunk * V, "beta": 0.5})
        stats.append(accumulate_gradient(net, ref_net, *batch, adv, cfg))
        grads.append(torch.cat([p.grad.flatten() for p in policy.model.parameters()]))
    assert stats[0]["tokens"] == sum(map(len, completions))
    for other, st in zip(grads[1:], stats[1:]):
        assert torch.allclose(grads[0], other, atol=1e-6)
        assert st["loss"] == pytest.approx(stats[0]["loss"], abs=1e-6)
        assert st["kl"] == pytest.approx(stats[0]["kl"], abs=1e-7) and st["kl"] > 0


def test_rl_step_runs_and_logs(lm_dir, gym_task, tmp_path):
    cfg = from_dict(RLConfig, {"n": 8, "prompts_per_step": 2, "G": 4, "steps": 2, "lr": 1e-3, "horizon": 24,
                               "adv_norm": "std"})
    out = train_rl(_policy(lm_dir), gym_task, cfg, tmp_path / "rl")
    recs = _log(out)
    assert [r["step"] for r in recs] == [0, 1]
    for r in recs:
        assert 0 <= r["reward"] <= 1 and 0 <= r["zero_variance_share"] <= 1 and r["tokens"] > 0
    meta = read_meta(out)
    assert meta["stage"] == "rl" and meta["step"] == 2 and meta["horizon"] == 24
    assert meta["reward_queries"] == 2 * 2 * 4
    assert isinstance(load_policy(out), HFPolicy)


def test_sft_on_search_traces_uses_only_prompts_with_a_success(lm_dir, gym_task, tmp_path):
    policy = _policy(lm_dir)
    # Per prompt i (two samples): i%4 == 0 right first; 1 and 3 never right; 2 right after a failure.
    pattern = lambda i: [(True, False), (False, False), (False, True), (False, False)][i % 4]  # noqa: E731
    s = _labelled_samples(policy, gym_task, pattern)
    cfg = from_dict(SFTConfig, {"n": 16, "expert": "search", "bridge": " Wait ", "max_failures": 1,
                                "optim": {"steps": 2}})
    texts = search_texts(policy, s.rollouts, s.T, 2, cfg)
    decode = [policy.decode(s.rollouts.tokens[k, :s.rollouts.counts[k]].tolist()) for k in range(len(s.rollouts))]
    for i, text in enumerate(texts):
        want = {0: decode[2 * i], 2: decode[2 * i] + " Wait " + decode[2 * i + 1]}.get(i % 4)
        assert text == want
    assert decode[0] == s.prompts[0].solution.strip()  # a trace is the attempt's text, without the EOS
    out = train_sft(policy, gym_task, cfg, tmp_path / "sft", samples=s)
    meta = read_meta(out)
    assert meta["training_traces"] == 8 and meta["validation_traces"] == 4  # n' < n: rejection sampling
    assert meta["test_nll_before"] is None  # search traces have no test set
    # every checked sample is a label, kept in a search trace or not (what the verifier reads too)
    assert meta["labelled_traces"] == len(s.T) + len(s.val_T)


def test_snapshot_restores_only_trainable_weights(lm_dir):
    policy = _policy(lm_dir)
    policy.train_top(1)  # only the top block, the final norm and the head train
    snap = Snapshot(policy.model)
    assert snap.params and all(p.requires_grad for p in snap.params.values())
    assert not any(k.startswith("model.layers.0.") or "embed" in k for k in snap.params)
    assert any(k.startswith("model.layers.1.") for k in snap.params)
    before = {k: p.detach().clone() for k, p in policy.model.named_parameters()}
    snap.take()
    with torch.no_grad():
        for p in snap.params.values():
            p.add_(1.0)
    snap.restore()
    assert all(torch.equal(p, before[k]) for k, p in policy.model.named_parameters())
    with pytest.raises(ValueError, match="blocks"):
        policy.train_top(3)
