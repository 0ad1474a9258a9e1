"""CPU training kernels: blocked attention and dropout equal the plain formulas."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model

from trajplan.model.gpt import attention_mask
from trajplan.model.kernels import blocked_attention, causal_bias, dropout, keep_mask


def explicit_attention(q, k, v, bias, keep=None, p=0.0):
    att = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1]) + bias
    att = att.softmax(-1)
    if keep is not None:
        att = att * keep / (1 - p)
    return att @ v


@pytest.mark.parametrize(("t", "n_blocks", "chunk"), [(29, 3, 4), (24, 1, 8), (7, 4, 3)])
@pytest.mark.parametrize("p", [0.0, 0.25])
def test_blocked_attention_equals_explicit(t: int, n_blocks: int, chunk: int, p: float) -> None:
    """Forward and all three gradients, with a fixed dropout mask, in float64."""
    g = torch.Generator().manual_seed(t)
    n, hd = 10, 8
    q, k, v = (torch.randn(n, t, hd, generator=g, dtype=torch.float64) for _ in range(3))
    bias = causal_bias(attention_mask(t, 4), torch.float64)  # causal + value tokens hidden
    keep = torch.rand(n, t, t, generator=g) >= p if p else None
    dout = torch.randn(n, t, hd, generator=g, dtype=torch.float64)

    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ours = blocked_attention(*leaves, bias, p, keep, chunk=chunk, n_blocks=n_blocks)
    ours.backward(dout)
    ref_leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = explicit_attention(*ref_leaves, bias, None if keep is None else keep.double(), p)
    ref.backward(dout)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_keep_mask_rate_and_dropout_scale() -> None:
    torch.manual_seed(0)
    keep = keep_mask((400, 1000), 0.1)
    assert keep.dtype == torch.bool
    assert abs(keep.float().mean().item() - 0.9) < 0.003  # 400k draws: sd ~0.0005
    x = torch.ones(200, 1000, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    assert sorted(y.unique().tolist()) == [0.0, pytest.approx(1 / 0.75)]
    assert abs((y == 0).float().mean().item() - 0.25) < 0.005
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(x * mask * s)/dx = mask * s = y here
    assert dropout(x, 0.25, training=False) is x


def test_keep_mask_follows_torch_seed() -> None:
    torch.manual_seed(3)
    a = keep_mask((50, 50), 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, keep_mask((50, 50), 0.5))


def test_model_cpu_training_path_equals_sdpa_path() -> None:
    """With dropout disabled at run time, the blocked CPU path gives SDPA's loss and grads."""
    model = tiny_model(seed=0, transitions=4, dropout=0.1).double()
    idx = torch.randint(0, 8, (3, 27))
    tgt = torch.randint(0, 8, (3, 27))
    grads = []
    for use_blocked in (True, False):
        model.zero_grad()
        model.train()
        for m in model.modules():  # dropout off everywhere; attn_drop steers the path
            if hasattr(m, "p"):
                m.p = 0.0
            if hasattr(m, "attn_drop"):
                m.attn_drop = 1e-12 if use_blocked else 0.0
        _, loss = model(idx, tgt)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_blocked_attention_same_draws_on_any_thread_count() -> None:
    """Each chunk has its own generator: 1 thread and 2 worker threads give equal results."""
    q, k, v = (torch.randn(12, 20, 8) for _ in range(3))
    bias = causal_bias(attention_mask(20, 5), torch.float32)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(7)
            outs.append(blocked_attention(q, k, v, bias, 0.3, chunk=2))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(8)
    assert not torch.equal(outs[0], blocked_attention(q, k, v, bias, 0.3, chunk=2))


@pytest.mark.parametrize("t", [40, 130])  # 312 / 29 heads per chunk: one chunk / several
def test_blocked_attention_bf16_close_to_float64(t: int) -> None:
    """bf16 inputs (what CPU autocast hands the kernel): bf16 output, finite gradients in
    bf16, within bf16's rounding of the float64 result (8 significant bits: 2^-8 relative
    per value, ~1e-2 after a softmax and two products)."""
    g = torch.Generator().manual_seed(t)
    n, hd = 60, 16
    q, k, v = (torch.randn(n, t, hd, generator=g, dtype=torch.float64) for _ in range(3))
    bias = causal_bias(attention_mask(t, 5), torch.float64)
    keep = torch.rand(n, t, t, generator=g) >= 0.2
    dout = torch.randn(n, t, hd, generator=g, dtype=torch.float64)
    leaves = [x.to(torch.bfloat16).requires_grad_() for x in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = blocked_attention(*leaves, bias.to(torch.bfloat16), 0.2, keep)
    ours.backward(dout.to(torch.bfloat16))
    ref_leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = explicit_attention(*ref_leaves, bias, keep.double(), 0.2)
    ref.backward(dout)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.double(), ref.detach(), atol=3e-2, rtol=2e-2)
    for a, b in zip(leaves, ref_leaves, strict=True):
        assert a.grad.dtype == torch.bfloat16 and torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad.double(), b.grad, atol=6e-2, rtol=3e-2)


def test_blocked_attention_under_autocast_same_on_any_thread_count() -> None:
    """Autocast is per thread: with it on, fp32 inputs gave a dtype error on one thread (the
    calling thread's baddbmm cast to bf16) and fp32 on two. The kernel computes in its
    inputs' dtype on every thread: fp32 in, the fp32 result out, with or without autocast."""
    q, k, v = (torch.randn(12, 20, 8) for _ in range(3))
    bias = causal_bias(attention_mask(20, 5), torch.float32)
    torch.manual_seed(7)
    plain = blocked_attention(q, k, v, bias, 0.3, chunk=2)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(7)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = blocked_attention(q, k, v, bias, 0.3, chunk=2)
            assert out.dtype == torch.float32 and torch.equal(out, plain)
    finally:
        torch.set_num_threads(before)


def test_dropout_draws_the_same_mask_in_bf16() -> None:
    x = torch.randn(64, 100)
    torch.manual_seed(5)
    a = dropout(x, 0.1, training=True)
    torch.manual_seed(5)
    b = dropout(x.to(torch.bfloat16), 0.1, training=True)
    assert b.dtype == torch.bfloat16 and torch.equal(a == 0, b == 0)
