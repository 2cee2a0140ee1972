"""The fp32 CPU inference kernels that stand in for PyTorch references (csrc/cpu_attention.h,
csrc/cpu_layernorm.h): same math as the references on every layout the models hand them, used by the `cpu`
backend only where autograd needs no backward, bad input named in the error."""
import threading

import pytest
import torch

from hlm_engine.ops.cpu import CpuBackend
from hlm_engine.ops.cpu import attention as cpu_attention
from hlm_engine.ops.cpu import ext as cpu_kernels
from hlm_engine.ops.cpu import norm as cpu_norm
from hlm_engine.kernels.add_layernorm import add_layernorm_ref
from hlm_engine.kernels.attention import varlen_attention_ref

pytestmark = pytest.mark.skipif(not cpu_kernels.available(),
                                reason="CPU kernels not built (HLM_BUILD_EXT=0) or no AVX2+FMA")


def _cu(lens):
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens), 0)
    return cu


def _qkv(lens, Hq, Hkv, D, fused, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = sum(lens)
    if fused:  # the models' layout: strided views of one [T, 3, H, D] QKV projection
        qkv = torch.randn(T, 3, Hq, D, generator=g)
        return qkv[:, 0], qkv[:, 1], qkv[:, 2]
    return tuple(torch.randn(T, h, D, generator=g) for h in (Hq, Hkv, Hkv))


# (lengths, Hq, Hkv, head_dim, causal, bias, fused QKV views): one token, lengths off every multiple of 8,
# MiniLM (12 x 32), MPNet with its relative bias (12 x 64), Qwen3-style GQA + causal (16/8 x 128), MQA.
CASES = [
    pytest.param([1], 2, 2, 32, False, False, True, id="one-token"),
    pytest.param([5, 9, 1, 17], 12, 12, 32, False, False, True, id="minilm-queries"),
    pytest.param([5, 9, 1, 17], 12, 12, 32, True, False, True, id="causal"),
    pytest.param([33, 70, 128], 12, 12, 64, False, True, True, id="mpnet-bias"),
    pytest.param([3, 64, 100], 16, 8, 128, True, False, False, id="qwen3-gqa-causal"),
    pytest.param([7, 33], 8, 1, 16, False, False, False, id="mqa-d16"),
    pytest.param([65, 2], 4, 2, 72, True, True, False, id="d72-bias-causal"),  # head dim over 64: two chunks
    pytest.param([1, 1, 1], 2, 2, 8, False, False, True, id="all-single"),
]


@pytest.mark.parametrize("lens,Hq,Hkv,D,causal,bias,fused", CASES)
def test_attention_matches_reference(lens, Hq, Hkv, D, causal, bias, fused):
    q, k, v = _qkv(lens, Hq, Hkv, D, fused, seed=len(lens) * 7 + D)
    L = max(lens)
    b = torch.randn(Hq, L + 3, L + 3) if bias else None  # a bias table longer than the batch, as MPNet's
    cu = _cu(lens)
    with torch.inference_mode():
        assert cpu_attention.usable(q, k, v, b, L)
        out = cpu_attention.varlen_attention(q, k, v, cu, causal, 0.3, b)
    ref = varlen_attention_ref(q.double(), k.double(), v.double(), cu, L, causal, 0.3,
                               None if b is None else b.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)  # fp32 sums of up to 128 terms


def test_attention_extreme_scores_stay_finite():
    """Max-subtracted softmax: scores of +-1e3 neither overflow nor turn the row into NaN."""
    q, k, v = _qkv([9, 4], 2, 2, 32, fused=False)
    q = q * 300
    with torch.inference_mode():
        out = cpu_attention.varlen_attention(q, k, v, _cu([9, 4]))
    ref = varlen_attention_ref(q.double(), k.double(), v.double(), _cu([9, 4]), 9)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T,H", [(1, 384), (102, 384), (7, 13), (5, 768), (3, 45)])
@pytest.mark.parametrize("with_residual,with_bias", [(True, True), (False, True), (True, False)])
def test_add_layernorm_matches_reference(T, H, with_residual, with_bias):
    g = torch.Generator().manual_seed(T * H)
    x = torch.randn(T, H, generator=g) * 3 + 1
    res = torch.randn(T, H, generator=g) if with_residual else None
    w, b = torch.randn(H, generator=g), torch.randn(H, generator=g) if with_bias else None
    with torch.inference_mode():
        assert cpu_norm.usable(x, res, w, b)
        out, r = cpu_norm.add_layernorm(x, res, w, b, 1e-12)
    ref, r_ref = add_layernorm_ref(x.double(), None if res is None else res.double(), w.double(),
                                   None if b is None else b.double(), 1e-12)
    torch.testing.assert_close(out.double(), ref, atol=5e-6, rtol=1e-5)
    torch.testing.assert_close(r.double(), r_ref)
    if res is None:
        assert r is x  # no residual: the "sum" is x itself, not a copy


def test_backend_routes_inference_only():
    """The cpu backend picks the kernels under inference_mode / no_grad and the references where autograd
    records; a backend built without them always runs the references."""
    ops, ref_ops = CpuBackend(kernels=True), CpuBackend(kernels=False)
    calls = []
    q, k, v = (t.clone().requires_grad_() for t in _qkv([4, 6], 2, 2, 32, fused=False))
    x, w, b = torch.randn(10, 32, requires_grad=True), torch.ones(32), torch.zeros(32)
    real_attn, real_norm = cpu_attention.varlen_attention, cpu_norm.add_layernorm
    try:
        cpu_attention.varlen_attention = lambda *a, **kw: calls.append("attn") or real_attn(*a, **kw)
        cpu_norm.add_layernorm = lambda *a, **kw: calls.append("norm") or real_norm(*a, **kw)
        out = ops.varlen_attention(q, k, v, _cu([4, 6]), 6)
        y = ops.add_layernorm(x, None, w, b, 1e-5)[0]
        (out.sum() + y.sum()).backward()  # the reference path: gradients flow
        assert calls == [] and q.grad is not None and x.grad is not None
        with torch.no_grad():
            ops.varlen_attention(q, k, v, _cu([4, 6]), 6)
            ops.add_layernorm(x, None, w, b, 1e-5)
        assert calls == ["attn", "norm"]
        with torch.inference_mode():  # built without the kernels: the references again
            ref_ops.varlen_attention(q, k, v, _cu([4, 6]), 6)
            ref_ops.add_layernorm(x, None, w, b, 1e-5)
        assert calls == ["attn", "norm"]
    finally:
        cpu_attention.varlen_attention, cpu_norm.add_layernorm = real_attn, real_norm


def test_layouts_the_kernels_do_not_read_go_to_the_references():
    q, k, v = _qkv([4, 6], 2, 2, 32, fused=False)
    with torch.inference_mode():
        assert not cpu_attention.usable(q.half(), k.half(), v.half(), None, 6)      # not fp32
        assert not cpu_attention.usable(q[..., :20], k[..., :20], v[..., :20], None, 6)  # head dim % 8
        assert not cpu_attention.usable(q.transpose(1, 2), k, v, None, 6)         # head dim not contiguous
        assert not cpu_norm.usable(torch.randn(4, 8).t(), None, torch.ones(4), None)  # rows not contiguous
        assert not cpu_norm.usable(torch.randn(4, 8), None, torch.ones(7), None)      # weight of the wrong size
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # long sequences with several threads: ATen's threaded SDPA
        with torch.inference_mode():
            assert cpu_attention.usable(q, k, v, None, cpu_attention.MAX_SEQLEN_THREADED)
            assert not cpu_attention.usable(q, k, v, None, cpu_attention.MAX_SEQLEN_THREADED + 1)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("cu,match", [
    ([0, 4, 3], "non-decreasing"),
    ([0, 4, 9], "cu_seqlens\\[-1\\] = 9 but q has 10 tokens"),
    ([1, 4, 10], "cu_seqlens\\[0\\] must be 0"),
])
def test_attention_bad_cu_seqlens_named(cu, match):
    q, k, v = _qkv([4, 6], 2, 2, 32, fused=False)
    with torch.inference_mode(), pytest.raises(ValueError, match=match):
        cpu_attention.varlen_attention(q, k, v, torch.tensor(cu, dtype=torch.int32))


def test_attention_bad_shapes_named():
    q, k, v = _qkv([4, 6], 4, 4, 32, fused=False)
    cu = _cu([4, 6])
    with torch.inference_mode():
        with pytest.raises(ValueError, match="must be \\[T, Hq, D\\]"):
            cpu_attention.varlen_attention(q, k[:5], v, cu)
        with pytest.raises(ValueError, match="positive multiple of kv heads"):
            cpu_attention.varlen_attention(q, k[:, :3], v[:, :3], cu)
        with pytest.raises(ValueError, match="bias .* must be \\[Hq=4"):
            cpu_attention.varlen_attention(q, k, v, cu, bias=torch.zeros(2, 6, 6))
        with pytest.raises(ValueError, match="sequence 1 has 6 tokens but the bias covers 5"):
            cpu_attention.varlen_attention(q, k, v, cu, bias=torch.zeros(4, 5, 5))
        with pytest.raises(ValueError, match="cu_seqlens must be 1-D"):
            cpu_attention.varlen_attention(q, k, v, cu.view(1, 3))


def test_bad_setting_named(monkeypatch):
    monkeypatch.setenv("HLM_CPU_KERNELS", "fast")
    with pytest.raises(ValueError, match="HLM_CPU_KERNELS='fast'"):
        CpuBackend.from_env()
    monkeypatch.setenv("HLM_CPU_KERNELS", "0")
    assert CpuBackend.from_env().kernels is False
    monkeypatch.setenv("HLM_CPU_KERNELS", "auto")
    assert CpuBackend.from_env().kernels is True


def test_without_the_extension_the_references_serve(monkeypatch):
    """HLM_BUILD_EXT=0 or a CPU without AVX2+FMA: auto picks the reference (logged), asking for the cpu
    backend or its kernels says why."""
    from hlm_engine import ops
    monkeypatch.setattr(cpu_kernels, "EXT", None)
    monkeypatch.setattr(cpu_kernels, "WHY", "the extension is not built (test)")
    assert CpuBackend.from_env().kernels is False
    assert ops.resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(RuntimeError, match="needs the C\\+\\+ extension"):
        ops.resolve_backend("cpu", "cpu")
    with pytest.raises(RuntimeError, match="need the built extension"):
        CpuBackend(kernels=True)


def test_concurrent_callers_get_their_own_results():
    """The kernels release the GIL and keep per-call scratch: two engine workers at once, same answers."""
    cases = [(_qkv([5, 9, 17], 12, 12, 32, fused=True, seed=s), torch.randn(31, 384)) for s in range(2)]
    w, b = torch.randn(384), torch.randn(384)
    cu = _cu([5, 9, 17])
    with torch.inference_mode():
        want = [(cpu_attention.varlen_attention(*qkv, cu), cpu_norm.add_layernorm(x, x, w, b, 1e-12)[0])
                for qkv, x in cases]
    errors = []

    def run(i):
        try:
            with torch.inference_mode():
                for _ in range(200):
                    qkv, x = cases[i]
                    assert torch.equal(cpu_attention.varlen_attention(*qkv, cu), want[i][0])
                    assert torch.equal(cpu_norm.add_layernorm(x, x, w, b, 1e-12)[0], want[i][1])
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
