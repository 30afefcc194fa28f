"""The KV-cache engine against the full-recompute reference; seeds; mask alignment."""

import pytest
import torch

from veriscale.policy.engine import generate, generate_reference, sample_next


def _prompt_ids(task, n=48):
    return task.encode(task.prompts("test", n, 0))


def _frequent_token(model, prompt_ids):
    """A token that about half the greedy rows emit, used as EOS so rows stop at different steps."""
    out = generate(model, prompt_ids, 16, eos_id=-1, pad_id=-2, temperature=0.0)
    V = model.cfg.vocab_size
    share = torch.stack([(out.tokens == v).any(1).double().mean() for v in range(V)])
    return int((share - 0.5).abs().argmin())


@pytest.mark.parametrize("compact", [True, False])
def test_engine_equals_reference_greedy(task, tiny_gpt, compact):
    ids = _prompt_ids(task)
    eos = _frequent_token(tiny_gpt, ids)
    fast = generate(tiny_gpt, ids, 20, eos_id=eos, pad_id=task.pad, temperature=0.0, compact=compact)
    slow = generate_reference(tiny_gpt, ids, 20, eos_id=eos, pad_id=task.pad, temperature=0.0)
    assert torch.equal(fast.tokens, slow.tokens)
    assert torch.equal(fast.mask, slow.mask)
    assert torch.equal(fast.counts, slow.counts)
    assert 0 < (fast.counts < 20).sum() < len(ids)  # some rows stopped early, some did not


def test_same_seed_same_samples_different_seed_differs(task, tiny_gpt):
    ids = _prompt_ids(task)
    def run(seed):
        return generate(tiny_gpt, ids, 20, eos_id=task.eos, pad_id=task.pad, temperature=1.0,
                        generator=torch.Generator().manual_seed(seed)).tokens
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_top_k_one_is_greedy(task, tiny_gpt):
    ids = _prompt_ids(task, 16)
    a = generate(tiny_gpt, ids, 12, eos_id=task.eos, pad_id=task.pad, temperature=0.0)
    b = generate(tiny_gpt, ids, 12, eos_id=task.eos, pad_id=task.pad, temperature=1.0, top_k=1,
                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.tokens, b.tokens)


def test_masks_aligned_and_eos_last(task, tiny_gpt):
    ids = _prompt_ids(task)
    eos = _frequent_token(tiny_gpt, ids)
    r = generate(tiny_gpt, ids, 20, eos_id=eos, pad_id=task.pad, temperature=1.0,
                 generator=torch.Generator().manual_seed(0))
    L = r.tokens.shape[1]
    # The mask is a prefix of length counts; outside it only padding.
    assert torch.equal(r.mask, torch.arange(L)[None] < r.counts[:, None])
    assert (r.tokens[~r.mask] == task.pad).all()
    # EOS, when present, is the last sampled token and appears once.
    has_eos = (r.tokens == eos).any(1)
    last = r.tokens.gather(1, (r.counts - 1)[:, None]).squeeze(1)
    assert (last[has_eos] == eos).all() and ((r.tokens == eos).sum(1) <= 1).all()
    assert (r.counts[~has_eos] == L).all()


def test_budget_is_respected(task, tiny_gpt):
    ids = _prompt_ids(task)
    for budget in (1, 5, 24):
        r = generate(tiny_gpt, ids, budget, eos_id=task.eos, pad_id=task.pad,
                     generator=torch.Generator().manual_seed(0))
        assert r.tokens.shape[1] == budget and (r.counts <= budget).all()


def test_inverse_cdf_draw_matches_the_softmax_and_is_seeded():
    """The inverse-CDF draw samples the softmax (frequencies within 5 standard errors of the
    closed form, zero-probability tokens never drawn), and a seed fixes it."""
    logits = torch.tensor([[0.0, 1.0, 2.0, float("-inf"), 0.5]]).repeat(40_000, 1)  # (B, V)
    p = (logits / 0.7).softmax(-1)[0]
    ids = sample_next(logits, 0.7, 0, torch.Generator().manual_seed(0), draw="inverse_cdf")
    freq = torch.bincount(ids, minlength=5).double() / len(ids)
    se = (p.double() * (1 - p.double()) / len(ids)).sqrt()
    assert freq[3] == 0
    assert ((freq - p.double()).abs() <= 5 * se + 1e-12).all(), (freq, p)
    again = sample_next(logits, 0.7, 0, torch.Generator().manual_seed(0), draw="inverse_cdf")
    assert torch.equal(ids, again)
    top2 = sample_next(logits, 0.7, 2, torch.Generator().manual_seed(1), draw="inverse_cdf")
    assert set(top2.tolist()) == {1, 2}  # top_k keeps the two most likely tokens only
    with pytest.raises(ValueError, match="draw"):
        sample_next(logits, 0.7, 0, None, draw="gumbel")


def test_inverse_cdf_draw_in_row_chunks_draws_the_same_tokens():
    """Chunking the rows (to bound the (rows, V) copies of a large vocabulary) changes no token:
    every chunk size gives the tokens of one whole-batch draw, with and without top-k, from
    float32 and bfloat16 logits."""
    logits = torch.randn(37, 50, generator=torch.Generator().manual_seed(3)) * 3  # (B, V)
    for top_k in (0, 5):
        for x in (logits, logits.bfloat16()):
            whole = sample_next(x, 0.8, top_k, torch.Generator().manual_seed(7), draw="inverse_cdf", chunk=10**9)
            for chunk in (1, 50, 4 * 50, 9 * 50 + 3):
                part = sample_next(x, 0.8, top_k, torch.Generator().manual_seed(7), draw="inverse_cdf", chunk=chunk)
                assert torch.equal(part, whole), (top_k, x.dtype, chunk)
