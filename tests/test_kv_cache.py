"""The growing KV cache layer holds exactly what transformers' concatenating one holds, through
appends, row selection, joins and cuts, and reallocates only when full (capacity doubles)."""

import torch
from transformers.cache_utils import DynamicLayer

from veriscale.policy.kv_cache import GrowingLayer, cut, editable, join


class _Cache:  # the part of a transformers Cache that join and cut read
    def __init__(self, layers):
        self.layers = layers


def _same(a: DynamicLayer, b: GrowingLayer) -> None:
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert a.get_seq_length() == b.get_seq_length()


def test_growing_layer_matches_dynamic_layer_and_doubles_its_room():
    g = torch.Generator().manual_seed(0)
    ref, grow = DynamicLayer(), GrowingLayer()
    buffers = set()
    for n in (7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1):  # a prefill, then decode steps of one token
        k, v = torch.randn(3, 2, n, 4, generator=g), torch.randn(3, 2, n, 4, generator=g)
        out = grow.update(k, v)
        ref.update(k, v)
        _same(ref, grow)
        assert torch.equal(out[0], ref.keys) and torch.equal(out[1], ref.values)
        buffers.add((grow._buf["keys"].data_ptr(), grow._buf["keys"].shape[-2]))
    assert sorted(cap for _, cap in buffers) == [7, 14, 28]  # 18 columns in 3 buffers: room doubles when full
    rows = torch.tensor([2, 0])
    ref.batch_select_indices(rows)
    grow.batch_select_indices(rows)
    _same(ref, grow)
    k, v = torch.randn(2, 2, 1, 4, generator=g), torch.randn(2, 2, 1, 4, generator=g)
    ref.update(k, v)
    grow.update(k, v)
    _same(ref, grow)


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
