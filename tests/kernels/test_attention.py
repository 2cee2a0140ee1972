"""Varlen flash attention against the padded-SDPA reference: lengths that break the block masks, causal
and bidirectional, GQA/MQA head mapping, head_dim 32..128 (and a non-power-of-two), the MPNet bias."""
import pytest
import torch
from .kernel_checks import DTYPES, assert_within_torch_error, packed

from hlm_engine.kernels.attention import varlen_attention, varlen_attention_ref

MIXED = [1, 7, 33, 127]  # one token, and lengths that are not multiples of any block size
# (lengths, Hq, Hkv, head_dim, causal, bias): GQA ratios 1/2/8, head_dim 32/64/128, both mask types.
CASES = [
    pytest.param([1], 2, 2, 64, True, False, id="one-token"),
    pytest.param(MIXED, 2, 2, 32, False, False, id="mixed-mha-d32-bidir"),
    pytest.param(MIXED, 4, 2, 64, True, False, id="mixed-gqa2-d64-causal"),
    pytest.param([7, 33], 8, 1, 32, True, False, id="gqa8-d32-causal"),
    pytest.param([1, 7, 33], 2, 1, 128, True, False, id="gqa2-d128-causal"),
    pytest.param([7, 33], 2, 2, 128, False, True, id="d128-bias-bidir"),
    pytest.param(MIXED, 2, 2, 64, False, True, id="mixed-bias-bidir"),
    pytest.param([33, 7], 2, 1, 64, True, True, id="bias-causal"),
    pytest.param([5, 9], 3, 3, 80, False, False, id="d80-padded"),
    # Short path (<= SHORT_MAX_L tokens: several heads per program, block-diagonal over kv heads): 12 heads
    # (a chunk of 8 + a masked one), GQA 2 at head_dim 128 (Qwen3), MPNet's bias, lengths 1..32.
    pytest.param([8], 12, 12, 32, False, False, id="short-minilm-1x8"),
    pytest.param([3, 16, 9], 12, 12, 32, False, False, id="short-minilm-ragged"),
    pytest.param([8, 5], 16, 8, 128, True, False, id="short-qwen3-gqa2"),
    pytest.param([32, 1, 17], 4, 1, 64, True, False, id="short-mqa-causal-L32"),
    pytest.param([7, 12], 6, 6, 64, False, True, id="short-bias"),
]


def _qkv(lens, Hq, Hkv, D, dtype, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    T, L = sum(lens), max(lens)
    q, k, v = (torch.randn(T, h, D, generator=g).to(dtype) for h in (Hq, Hkv, Hkv))
    b = torch.randn(Hq, L, L, generator=g).to(dtype) if bias else None
    return q, k, v, b


@pytest.mark.parametrize("lens,Hq,Hkv,D,causal,bias", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_attention(lens, Hq, Hkv, D, causal, bias, dtype):
    q, k, v, b = _qkv(lens, Hq, Hkv, D, dtype, bias)
    cu, _ = packed(lens)
    L = max(lens)
    out = varlen_attention(q, k, v, cu, L, causal, None, b)
    out_t = varlen_attention_ref(q, k, v, cu, L, causal, None, b)
    out64 = varlen_attention_ref(q.double(), k.double(), v.double(), cu, L, causal, None,
                                 None if b is None else b.double())
    assert_within_torch_error(out, out_t, out64, dtype, f"attention lens={lens} Hq={Hq} Hkv={Hkv} D={D}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_streaming_path_on_short_sequences(monkeypatch, dtype):
    """The streaming (flash) kernel still serves short sequences when the short path is off."""
    import hlm_engine.kernels.attention as attn
    monkeypatch.setattr(attn, "SHORT_MAX_L", 0)
    lens = [8, 3]
    q, k, v, b = _qkv(lens, 4, 2, 64, dtype, True)
    cu, _ = packed(lens)
    out = varlen_attention(q, k, v, cu, 8, True, None, b)
    out64 = varlen_attention_ref(q.double(), k.double(), v.double(), cu, 8, True, None, b.double())
    assert_within_torch_error(out, varlen_attention_ref(q, k, v, cu, 8, True, None, b), out64, dtype, "flash short")


def test_short_heads_fill_the_score_tile():
    from hlm_engine.kernels.attention import short_heads
    assert short_heads(8, 12, 1) == 8 and short_heads(8, 16, 2) == 8   # a query: 2 programs per sequence
    assert short_heads(32, 16, 2) == 2 and short_heads(16, 12, 1) == 4
    assert short_heads(33, 12, 1) == 0 and short_heads(8, 32, 3) == 0   # too long; non-power-of-two group


def test_attention_reads_strided_qkv_views():
    # BERT passes q/k/v as views of one fused [T, 3, H, D] projection (row stride 3*H*D).
    lens = [7, 12]
    cu, _ = packed(lens)
    qkv = torch.randn(sum(lens), 3, 4, 32)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    out = varlen_attention(q, k, v, cu, 12, False, 0.3, None)
    torch.testing.assert_close(out, varlen_attention_ref(q, k, v, cu, 12, False, 0.3, None))


def test_attention_bias_larger_than_max_seqlen():
    # A bias table built for a longer max length is indexed by within-sequence positions, not resized.
    lens = [3, 6]
    cu, _ = packed(lens)
    q, k, v, _ = _qkv(lens, 2, 2, 32, torch.float32, False)
    bias = torch.randn(2, 16, 16)
    out = varlen_attention(q, k, v, cu, 6, False, None, bias)
    torch.testing.assert_close(out, varlen_attention_ref(q, k, v, cu, 6, False, None, bias[:, :6, :6]))


def test_attention_rejects_bad_heads():
    q, k, v, _ = _qkv([4], 3, 2, 32, torch.float32, False)
    with pytest.raises(ValueError, match="kv heads must divide"):
        varlen_attention(q, k, v, packed([4])[0], 4)


@pytest.mark.parametrize("causal,bias", [(False, False), (True, False), (False, True), (True, True)])
def test_short_batch_path_matches_sdpa(monkeypatch, causal, bias):
    """The reference's explicit-softmax path for padded short batches (the CPU serving case) equals its
    SDPA path on the same inputs."""
    import hlm_engine.kernels.attention as attn
    lens = [1, 3, 12, 9, 30]
    q, k, v, b = _qkv(lens, 4, 4, 32, torch.float32, bias, seed=3)
    cu, _ = packed(lens)
    short = varlen_attention_ref(q, k, v, cu, max(lens), causal, None, b)
    monkeypatch.setattr(attn, "_SHORT_L", 0)
    torch.testing.assert_close(short, varlen_attention_ref(q, k, v, cu, max(lens), causal, None, b),
                               atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("causal,bias,hkv", [(False, False, 4), (False, True, 4), (True, False, 2), (True, True, 1)])
def test_reference_length_buckets_equal_padding_everything(monkeypatch, causal, bias, hkv):
    """On CPU a mixed-length batch runs per length group (kernels/attention.py `_length_buckets`): the same
    outputs and gradients as padding every sequence to the longest."""
    import hlm_engine.kernels.attention as attn
    lens = [3, 64, 5, 20, 1, 33, 7, 18, 40, 2]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    assert len(attn._length_buckets(lens)) > 1
    T, H, D = sum(lens), 4, 32
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(T, h, D, generator=g, dtype=torch.float64, requires_grad=True) for h in (H, hkv, hkv)]
    b = torch.randn(H, 64, 64, generator=g, dtype=torch.float64) if bias else None
    grad_out = torch.randn(T, H, D, generator=g, dtype=torch.float64)

    def run(min_l):
        monkeypatch.setattr(attn, "_BUCKET_MIN_L", min_l)
        for t in leaves:
            t.grad = None
        out = attn.varlen_attention_ref(*leaves, cu, max(lens), causal, None, b)
        out.backward(grad_out)
        return out.detach(), [t.grad.clone() for t in leaves]

    out_b, grads_b = run(16)
    out_p, grads_p = run(10 ** 9)  # never bucketed: everything padded to 64
    torch.testing.assert_close(out_b, out_p)
    for gb, gp in zip(grads_b, grads_p):
        torch.testing.assert_close(gb, gp)
    # and both equal each sequence run alone (no padding at all): the padded slots, which read a copy of
    # their sequence's last token, change nothing
    for t in leaves:
        t.grad = None
    alone = torch.cat([attn.varlen_attention_ref(*(t[s:e] for t in leaves), torch.tensor([0, e - s], dtype=torch.int32),
                                                  e - s, causal, None, b) for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())])
    alone.backward(grad_out)
    torch.testing.assert_close(out_b, alone.detach())
    for gb, t in zip(grads_b, leaves):
        torch.testing.assert_close(gb, t.grad)
