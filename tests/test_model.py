"""The TT GPT: shapes, parameter count, masking, loss weights, and the key/value cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from trajplan.config import ModelConfig
from trajplan.model.cache import KVCache
from trajplan.model.decoding import forward_cached, new_cache
from trajplan.model.gpt import TrajectoryGPT, attention_mask


# Beam-search operations on a KVCache, written out for the tests (the planner keeps its own
# preallocated buffers, trajplan.planner.gather_rows).
def cache_reorder(cache: KVCache, idx: torch.Tensor) -> KVCache:
    """Select (and duplicate) sequences along the batch: new[b] = old[idx[b]]."""
    return KVCache(cache.k.index_select(1, idx), cache.v.index_select(1, idx), cache.length)


def cache_repeat(cache: KVCache, n: int) -> KVCache:
    """Tile the batch n times, like `x.repeat(n, 1)` on the token sequences."""
    return cache_reorder(cache, torch.arange(cache.batch_size).repeat(n))


def cache_concat(a: KVCache, b: KVCache) -> KVCache:
    """Join two caches of the same length along the batch, keeping the larger capacity."""
    assert a.length == b.length
    n, cap = a.length, max(a.capacity, b.capacity)
    shape = (a.k.shape[0], a.batch_size + b.batch_size, a.k.shape[2], cap, a.k.shape[4])
    k, v = a.k.new_zeros(shape), a.v.new_zeros(shape)
    k[:, :, :, :n] = torch.cat([a.k[:, :, :, :n], b.k[:, :, :, :n]], dim=1)
    v[:, :, :, :n] = torch.cat([a.v[:, :, :, :n], b.v[:, :, :, :n]], dim=1)
    return KVCache(k, v, n)


def make_model(seed: int = 0, **kw: int | float) -> TrajectoryGPT:
    """conftest.tiny_model (obs 3, act 2, 7 bins, 6 transitions) with a random pos_emb."""
    model = tiny_model(seed, **kw)
    with torch.no_grad():  # the reference init zeroes pos_emb; randomise to test positions
        model.pos_emb.normal_(0, 0.1)
    return model


def test_reference_parameter_count() -> None:
    """HalfCheetah, reference defaults: 1,468,544 parameters (docs/method.md, Model)."""
    cfg = ModelConfig(obs_dim=17, act_dim=6, vocab_size=100, block_size=10 * 25 - 1)
    model = TrajectoryGPT(cfg)
    assert model.num_params() == 1_468_544
    assert model.tok_emb.weight.shape == (100 * 25 + 1, 128)
    assert model.head.shape == (25, 101, 128)
    assert torch.all(model.pos_emb == 0)


def test_attention_mask_hides_value_tokens() -> None:
    mask = attention_mask(10, 4)  # D = 4: value tokens at 3 and 7
    assert mask[9].tolist() == [True, True, True, False, True, True, True, False, True, True]
    assert not mask[3, 3]  # a value token cannot see itself either
    assert mask[2].tolist() == [True, True, True] + [False] * 7


def test_value_tokens_are_invisible_to_other_positions() -> None:
    """Only a value token's own position (through the residual stream) sees it."""
    model = make_model()
    D = model.transition_dim
    x = torch.randint(0, 7, (2, 4 * D))
    x2 = x.clone()
    x2[:, D - 1 :: D] = (x2[:, D - 1 :: D] + 3) % 7  # change every value token
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x2)
    other = torch.ones(4 * D, dtype=torch.bool)
    other[D - 1 :: D] = False
    assert torch.allclose(a[:, other], b[:, other], atol=1e-6)
    assert not torch.allclose(a[:, ~other], b[:, ~other], atol=1e-3)


def test_stop_token_uses_last_embedding_row() -> None:
    model = make_model()
    D = model.transition_dim
    idx = torch.tensor([[7] * D])  # stop tokens everywhere
    emb = model._embed(idx, 0)
    expected = model.tok_emb.weight[7 * D] + model.pos_emb[:D]
    assert torch.allclose(emb, expected)
    idx = torch.tensor([[2, 2, 2, 2, 2, 2, 2]])  # bin 2 of dimension d -> row d * N + 2
    rows = torch.arange(D) * 7 + 2
    assert torch.allclose(model._embed(idx, 0), model.tok_emb.weight[rows] + model.pos_emb[:D])


def explicit_forward(model: TrajectoryGPT, idx: torch.Tensor) -> torch.Tensor:
    """The original design: explicit masked softmax(QK^T / sqrt(d)) V and a per-head loop."""
    B, T = idx.shape
    D, C, H = model.transition_dim, model.cfg.n_embd, model.cfg.n_head
    x = model._embed(idx, 0)
    mask = torch.tril(torch.ones(T, T))
    mask[:, D - 1 :: D] = 0
    for blk in model.blocks:
        h = blk.ln1(x)
        q, k, v = blk.attn.qkv(h).split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        att = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        att = att.masked_fill(mask == 0, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + blk.attn.proj(y)
        x = x + blk.mlp(blk.ln2(x))
    x = model.ln_f(x)
    logits = torch.stack([x[:, t] @ model.head[t % D].T for t in range(T)], dim=1)
    return logits


@pytest.mark.parametrize("length", [1, 6, 7, 20, 41])
def test_sdpa_model_equals_explicit_reference(length: int) -> None:
    model = make_model(seed=length)
    idx = torch.randint(0, 8, (3, length))
    with torch.no_grad():
        ours, _ = model(idx)
        ref = explicit_forward(model, idx)
    assert ours.shape == (3, length, 8)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_loss_weights_and_mask_per_target_dimension() -> None:
    """One window, hand-computed: weight of the target's dimension, times the mask, mean."""
    model = make_model(action_weight=5.0, reward_weight=2.0, value_weight=3.0)
    D = model.transition_dim  # 3 obs, 2 act, r, V
    T = 2 * D - 1
    idx = torch.randint(0, 7, (1, T))
    targets = torch.randint(0, 8, (1, T))
    mask = torch.ones(1, T)
    mask[0, -3:] = 0
    with torch.no_grad():
        logits, loss = model(idx, targets, mask)
        ce = F.cross_entropy(logits[0], targets[0], reduction="none")
    # input position t predicts dimension (t + 1) % D
    dim_weight = {0: 1.0, 1: 1.0, 2: 1.0, 3: 5.0, 4: 5.0, 5: 2.0, 6: 3.0}
    expected = sum(ce[t] * dim_weight[(t + 1) % D] * mask[0, t] for t in range(T)) / T
    assert loss is not None
    assert torch.isclose(loss, expected, atol=1e-6)


def test_cached_decoding_equals_full_forward() -> None:
    """Prefix, then one token at a time over several whole transitions (atol 1e-5)."""
    model = make_model()
    D = model.transition_dim
    idx = torch.randint(0, 8, (4, 5 * D + 3))
    with torch.no_grad():
        full, _ = model(idx)
        cache = new_cache(model, 4)
        pieces = [forward_cached(model, idx[:, : D + 2], cache)]
        for t in range(D + 2, idx.shape[1]):
            pieces.append(forward_cached(model, idx[:, t : t + 1], cache))
        inc = torch.cat(pieces, dim=1)
    assert cache.length == idx.shape[1]
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=1e-5)


def test_cached_decoding_across_reorder_and_repeat() -> None:
    """Beam search reorders and tiles the cache; the logits must follow the sequences."""
    model = make_model(seed=3)
    D = model.transition_dim
    idx = torch.randint(0, 8, (3, 4 * D))
    split = 2 * D - 2
    with torch.no_grad():
        cache = new_cache(model, 3)
        forward_cached(model, idx[:, :split], cache)
        order = torch.tensor([2, 2, 0, 1, 0])
        cache = cache_reorder(cache, order)
        cache = cache_repeat(cache, 2)  # like x.repeat(2, 1)
        seqs = idx[order].repeat(2, 1)
        pieces = [forward_cached(model, seqs[:, t : t + 1], cache) for t in range(split, 4 * D)]
        inc = torch.cat(pieces, dim=1)
        full, _ = model(seqs)
    torch.testing.assert_close(inc, full[:, split:], atol=1e-5, rtol=1e-5)


def test_cache_concat_and_last_only() -> None:
    model = make_model(seed=5)
    idx = torch.randint(0, 8, (2, 12))
    with torch.no_grad():
        full, _ = model(idx)
        a, b = new_cache(model, 1), new_cache(model, 1)
        forward_cached(model, idx[:1, :9], a)
        forward_cached(model, idx[1:, :9], b)
        both = cache_concat(a, b)
        last = forward_cached(model, idx[:, 9:12], both, last_only=True)
    assert last.shape == (2, 1, 8)
    torch.testing.assert_close(last[:, 0], full[:, 11], atol=1e-5, rtol=1e-5)


def test_cache_overflow_is_an_error() -> None:
    model = make_model()
    cache = new_cache(model, 1, capacity=5)
    with pytest.raises(ValueError, match="exceeds"):
        forward_cached(model, torch.zeros(1, 6, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="longer than the block"):
        model(torch.zeros(1, model.block_size + 1, dtype=torch.long))
