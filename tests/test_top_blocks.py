"""The frozen-trunk split (`HFPolicy.top_blocks`) against the full forward, its slow reference:
features then top equal the whole network's logits and hidden states, also at every cut of a model
whose blocks attend by position (Gemma 3: sliding-window or global); a model that cannot be split
says so once; the RL gradient and KL
through a shared trunk equal the full-forward ones; a verifier reads features as it reads ids;
the KL temperature knob computes KL(softmax(z/T) || softmax(z_ref/T)) exactly."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import HF_PROMPTS as PROMPTS

from veriscale.config import from_dict
from veriscale.learn.data import lm_rows
from veriscale.learn.loop import LogitsOf
from veriscale.learn.rl import RLConfig, accumulate_gradient, padded, rl_loss
from veriscale.learn.verifier import Verifier
from veriscale.policy.hf import HFPolicy, TopBlocks
from veriscale.policy.load import load_policy
from veriscale.policy.text import HFConfig
from veriscale.tasks.base import id_rollouts


def _policy(path):
    return load_policy(f"hf:{path}", hf=HFConfig(progress=False))


def _batch(pad_id: int, rows: int = 6):
    g = torch.Generator().manual_seed(0)
    prompts = [[5 + i] * (2 + i % 3) for i in range(rows)]
    completions = [torch.randint(3, 100, (1 + (3 * i) % 7,), generator=g).tolist() for i in range(rows)]
    return lm_rows(prompts, id_rollouts(completions, 7, pad_id), pad_id)


def test_nothing_frozen_means_no_split(lm_dir):
    policy = _policy(lm_dir)
    assert policy.top_blocks() is None  # all blocks train
    policy.train_top(2)  # both of the two blocks train: still only the embedding is frozen
    assert policy.top_blocks() is None


def test_features_then_top_equal_the_full_forward(lm_dir):
    policy = _policy(lm_dir)
    policy.train_top(1)
    top = policy.top_blocks()
    assert top is not None and top.frozen == 1
    inputs, _, _ = _batch(policy.pad_id)
    h = top.features(inputs)
    assert h.shape == (*inputs.shape, policy.hidden_size) and not h.requires_grad
    with torch.no_grad():
        assert torch.allclose(top.logits(h), policy.logits(inputs), atol=1e-5)
        assert torch.allclose(top.hidden(h), policy.hidden(inputs), atol=1e-5)
    assert len(policy.model.base_model.layers) == 2  # the swap leaves the model whole


def _gemma3(layers: int = 5):
    """A tiny random Gemma 3: blocks 0, 1, 3, 4 attend within a window of 3 tokens, block 2 to all."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=3,
                           sliding_window_pattern=3, max_position_embeddings=64)
    assert cfg.layer_types[2] == "full_attention" and cfg.layer_types.count("full_attention") == 1
    return Gemma3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("frozen", [1, 2, 3, 4])
def test_a_split_of_gemma3_at_any_block_equals_the_full_forward(frozen):
    """Transformers picks each Gemma 3 block's mask and rotary embedding by its position in the
    block list; the split keeps every block's own, wherever it cuts (not only after whole patterns)."""
    model = _gemma3()
    ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(1))  # longer than the window
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a split that reproduces the model says nothing
        top = TopBlocks.checked(model, frozen)
    assert top is not None
    with torch.no_grad():
        assert torch.allclose(top.logits(top.features(ids)), model(input_ids=ids, use_cache=False).logits, atol=1e-5)
    assert model.config.layer_types[2] == "full_attention" and len(model.model.layers) == 5  # left whole


def test_a_model_that_cannot_be_split_says_so_once():
    """GPT-2 names its blocks `h`, not `layers`: no split, and one warning line saying why."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert TopBlocks.checked(model, 1) is None and TopBlocks.checked(model, 1) is None
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "GPT2LMHeadModel" in str(caught[0].message) and "every training step" in str(caught[0].message)


def test_rl_gradient_through_a_shared_trunk_equals_the_full_forward(lm_dir):
    policy = _policy(lm_dir)
    ref = policy.frozen_copy()
    with torch.no_grad():  # move the policy's top block off the reference, so the KL has a gradient
        for p in policy.model.base_model.layers[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy.train_top(1)
    top = policy.top_blocks()
    batch, adv = _batch(policy.pad_id), torch.randn(6, generator=torch.Generator().manual_seed(1))
    cfg = from_dict(RLConfig, {"micro_batch": 4, "beta": 0.5, "temperature": 0.7})
    results = []
    for net, ref_net in ((LogitsOf(policy), LogitsOf(ref)),
                         (LogitsOf(policy, top), LogitsOf(ref, ref.top_blocks(top.frozen)))):
        policy.model.zero_grad(set_to_none=True)
        stats = accumulate_gradient(net, ref_net, *batch, adv, cfg)
        grads = {k: p.grad.clone() for k, p in policy.model.named_parameters() if p.requires_grad}
        results.append((stats, grads))
    (full, g_full), (split, g_split) = results
    assert split["kl"] == pytest.approx(full["kl"], rel=1e-4) and full["kl"] > 0
    assert split["loss"] == pytest.approx(full["loss"], rel=1e-4)
    assert g_full.keys() == g_split.keys() and not any("layers.0." in k for k in g_full)
    for k in g_full:
        assert torch.allclose(g_full[k], g_split[k], atol=1e-5), k


def test_verifier_reads_features_as_it_reads_ids(lm_dir):
    policy = _policy(lm_dir)
    v = Verifier(policy)
    torch.nn.init.normal_(v.value.weight)
    policy.train_top(1)
    v.top = policy.top_blocks()
    inputs, _, _ = _batch(policy.pad_id)
    with torch.no_grad():
        assert torch.allclose(v(v.top.features(inputs)), v(inputs), atol=1e-5)


@pytest.mark.parametrize("kl_temperature", [1.0, 0.7])
def test_kl_term_is_the_exact_kl_at_its_temperature(kl_temperature):
    g = torch.Generator().manual_seed(0)
    logits, ref = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    targets = torch.randint(0, 11, (6,), generator=g)
    loss, stats = rl_loss(logits, ref, targets, torch.zeros(6), beta=1.0, temperature=0.7,
                          kl_temperature=kl_temperature)
    p, q = F.softmax(logits / kl_temperature, -1), F.softmax(ref / kl_temperature, -1)
    want = (p * (p.log() - q.log())).sum(-1).mean().item()  # closed form per state, averaged
    assert stats["kl"] == pytest.approx(want, rel=1e-5)
    assert loss.item() == pytest.approx(want, rel=1e-5)  # zero advantage: the loss is beta x KL
    adv = torch.randn(6, generator=g)  # the policy-gradient term reads softmax(z / 0.7) at any kl_temperature
    pg, _ = rl_loss(logits, ref, targets, adv, beta=0.0, temperature=0.7, kl_temperature=kl_temperature)
    tok = F.log_softmax(logits / 0.7, -1).gather(-1, targets[:, None]).squeeze(-1)
    assert pg.item() == pytest.approx((-adv * tok).mean().item(), rel=1e-5)


def test_sampling_keeps_the_trunk_features_a_full_recompute_gives(model, tokenizer):
    policy = HFPolicy("tiny", None, tokenizer, HFConfig(progress=False, batch_size=4), model=model)
    policy.train_top(1)  # two micro-batches of 4 rows, each dropping rows as they end (two EOS ids)
    top = policy.top_blocks()
    prompts = [p for p in PROMPTS[:3] for _ in range(3)]  # 3 samples of each prompt
    plain = policy.sample(prompts, 20, temperature=1.0, seed=0)
    ro = policy.sample(prompts, 20, temperature=1.0, seed=0, capture=top.frozen)
    assert torch.equal(ro.tokens, plain.tokens) and plain.features is None  # capturing changes no draw
    prompt_ids = policy.encode_prompts(prompts)
    inputs, _, _ = lm_rows(prompt_ids, ro, policy.pad_id)
    kept, full = padded(ro.features, inputs.shape[1]), top.features(inputs)  # (N, S, d) each
    assert kept.shape == full.shape and len(set(ro.counts.tolist())) > 1
    for i, p in enumerate(prompt_ids):
        n = len(p) + int(ro.counts[i]) - 1  # the fed tokens: prompt, then the trace but its last token
        assert len(ro.features[i]) == n
        assert torch.allclose(kept[i, :n], full[i, :n], atol=1e-4)
        assert not kept[i, n:].any()
