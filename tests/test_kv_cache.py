"""The growing KV cache layer holds exactly what transformers' concatenating one holds, through
appends, row selection, joins and cuts, hands attention whole zero-padded buffers as wide as the
mask it reports, and reallocates only when full (capacity in blocks); the decode attention over
them equals SDPA's."""

import pytest
import torch
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from veriscale.policy.decode_attention import decode_attention
from veriscale.policy.kv_cache import BLOCK, GrowingLayer, cut, editable, join


class _Cache:  # the part of a transformers Cache that join and cut read
    def __init__(self, layers):
        self.layers = layers


def _same(a: DynamicLayer, b: GrowingLayer) -> None:
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert a.get_seq_length() == b.get_seq_length()


def test_growing_layer_matches_dynamic_layer_and_grows_in_blocks():
    g = torch.Generator().manual_seed(0)
    ref, grow = DynamicLayer(), GrowingLayer()
    buffers = set()
    for n in (7,) + (1,) * (BLOCK + 2):  # a prefill, then decode steps of one token, past one block
        k, v = torch.randn(3, 2, n, 4, generator=g), torch.randn(3, 2, n, 4, generator=g)
        width = grow.get_mask_sizes(n)[0]  # asked before the update, as transformers builds the mask
        out = grow.update(k, v)
        ref.update(k, v)
        _same(ref, grow)
        S = ref.get_seq_length()
        assert out[0].shape[-2] == width >= S and out[0].is_contiguous()  # the mask spans the whole buffer
        assert torch.equal(out[0][:, :, :S], ref.keys) and torch.equal(out[1][:, :, :S], ref.values)
        assert not out[0][:, :, S:].any() and not out[1][:, :, S:].any()  # zeros beyond: finite, masked
        buffers.add((grow._buf["keys"].data_ptr(), grow._buf["keys"].shape[-2]))
    assert sorted(cap for _, cap in buffers) == [BLOCK, 2 * BLOCK]  # 7 + BLOCK + 2 columns in 2 buffers
    rows = torch.tensor([2, 0])
    ref.batch_select_indices(rows)
    grow.batch_select_indices(rows)
    _same(ref, grow)
    assert grow._buf["keys"].shape[-2] == 2 * BLOCK  # row selection keeps the room
    k, v = torch.randn(2, 2, 1, 4, generator=g), torch.randn(2, 2, 1, 4, generator=g)
    ref.update(k, v)
    grow.update(k, v)
    _same(ref, grow)


def test_without_whole_attention_gets_the_filled_columns_as_from_transformers_cache():
    """`whole=False` (SDPA decoding) hands attention what a DynamicLayer would, with its mask sizes."""
    g = torch.Generator().manual_seed(3)
    ref, grow = DynamicLayer(), GrowingLayer(whole=False)
    for n in (5, 1, 1):
        k, v = torch.randn(2, 2, n, 4, generator=g), torch.randn(2, 2, n, 4, generator=g)
        assert grow.get_mask_sizes(n) == ref.get_mask_sizes(n)
        out, want = grow.update(k, v), ref.update(k, v)
        assert torch.equal(out[0], want[0]) and torch.equal(out[1], want[1])


@pytest.mark.parametrize("mask", ["none", "bool", "additive"])
def test_decode_attention_equals_sdpa(mask):
    """One query token of 6 heads over 2 key/value heads, 9 columns of which some rows have
    left padding: the two batched matmuls give SDPA's output (float32)."""
    g = torch.Generator().manual_seed(2)
    b, H, kvh, C, d = 3, 6, 2, 9, 8
    q = torch.randn(b, H, 1, d, generator=g)
    k, v = torch.randn(b, kvh, C, d, generator=g), torch.randn(b, kvh, C, d, generator=g)
    keep = torch.ones(b, 1, 1, C, dtype=torch.bool)
    keep[0, ..., :4] = keep[2, ..., :1] = False
    m = {"none": None, "bool": keep,
         "additive": torch.zeros(b, 1, 1, C).masked_fill(~keep, torch.finfo(torch.float32).min)}[mask]

    class Module:
        num_key_value_groups, is_causal = H // kvh, True

    fast, _ = decode_attention(Module, q, k, v, m, scaling=0.3)
    ref, _ = sdpa_attention_forward(Module, q, k, v, m, scaling=0.3)
    assert fast.shape == ref.shape == (b, 1, H, d)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


def test_join_and_cut_edit_growing_and_plain_caches_alike():
    g = torch.Generator().manual_seed(1)

    def pair(b, S):
        a, c = DynamicLayer(), GrowingLayer()
        k, v = torch.randn(b, 2, S, 4, generator=g), torch.randn(b, 2, S, 4, generator=g)
        a.update(k, v)
        c.update(k, v)
        return a, c

    (a1, g1), (a2, g2) = pair(2, 5), pair(3, 8)
    m1, m2 = torch.ones(2, 5, dtype=torch.long), torch.ones(3, 8, dtype=torch.long)
    ref, ref_mask = join(_Cache([a1]), m1, _Cache([a2]), m2)
    grown, mask = join(_Cache([g1]), m1, _Cache([g2]), m2)
    assert torch.equal(ref_mask, mask)
    _same(ref.layers[0], grown.layers[0])
    cut(ref, 2)
    cut(grown, 2)
    _same(ref.layers[0], grown.layers[0])
    k, v = torch.randn(5, 2, 1, 4, generator=g), torch.randn(5, 2, 1, 4, generator=g)
    ref.layers[0].update(k, v)
    grown.layers[0].update(k, v)
    _same(ref.layers[0], grown.layers[0])
    assert editable(grown) and editable(ref)


def test_a_sliding_window_model_samples_in_fixed_batches_and_says_so(tokenizer):
    """Gemma 3's sliding-window layers cannot be joined: refill says once that it is off, and
    greedy rows still equal transformers' generate row by row."""
    import warnings

    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from conftest import HF_PROMPTS
    from veriscale.policy.hf_sampler import HFSampler
    from veriscale.policy.text import HFConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=3,
                           sliding_window_pattern=3, max_position_embeddings=128,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = Gemma3ForCausalLM(cfg).eval()
    s = HFSampler(model, tokenizer, HFConfig(progress=False, batch_size=2, chat="off"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        r = s.sample(HF_PROMPTS, 12, temperature=0.0)
    said = [w for w in caught if "continuous batching is off" in str(w.message)]
    assert len(said) == 1
    for i, p in enumerate(HF_PROMPTS):
        ids = torch.tensor([tokenizer(p).input_ids])
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
        stop = next((j + 1 for j, t in enumerate(ref.tolist()) if t == tokenizer.eos_token_id), len(ref))
        assert r.tokens[i, :r.counts[i]].tolist() == ref[:stop].tolist()
