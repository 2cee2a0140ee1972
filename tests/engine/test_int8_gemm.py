"""int8 weights on integer multiply-adds (csrc/int8_gemm.h): at every row count PackedLinear runs int8 panels
on vpmaddwd over activations quantised per row to int16 (up to two register tiles of rows the int8 pairs are
widened in registers, past that once per chunk into an L1 buffer). Against the dequantised int8 weights
(scale * q) times fp32 x the result is within ~1e-4 of |y|'s scale at every shape: both sides of the
in-register threshold, short and long K (odd: the last k pair padded), partial last panels, GELU, bias or
none, zero and non-finite rows, strided x / y, panel ranges split over concurrent threads; a row's output
does not depend on the rows beside it (bitwise); the native encoder's int8 embeddings stay within the
format's bound at batch 64 and equal each query's batch-1 embedding bitwise."""
import concurrent.futures as cf

import numpy as np
import pytest
import torch

from hlm_engine.ops.cpu import ext

pytestmark = pytest.mark.skipif(not ext.available(), reason="CPU kernels not built (HLM_BUILD_EXT=0) or no AVX2+FMA")

PANEL = 16
IN_REGISTER_ROWS = 12  # kInRegisterRows (int8_gemm.cpp): up to here the tiles widen the int8 pairs in registers


def _dequant(w: np.ndarray) -> np.ndarray:
    """What PackedLinear stores for int8: per-output-channel symmetric scales, q in [-127, 127]."""
    mx = np.abs(w).max(1, keepdims=True)
    scale = np.where(mx > 0, mx / np.float32(127), np.float32(1)).astype(np.float32)
    return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)


def _gelu(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1 + torch.erf(torch.from_numpy(v / np.sqrt(2))).numpy())


def _packed(n, k, seed=0, bias=True, fmt="int8"):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    w[n // 3] = 0  # an all-zero output channel
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    lin = ext.EXT.PackedLinear(w.ctypes.data, n, k, b.ctypes.data if bias else 0, fmt)
    return lin, w, b


def _run(lin, x, n, gelu=False, p0=0, p1=None, y=None):
    m, k = x.shape
    if y is None:
        y = np.full((m, n), np.nan, np.float32)
    assert x.strides[1] == 4 and y.strides[1] == 4
    lin.run(x.ctypes.data, m, x.strides[0] // 4, y.ctypes.data, y.strides[0] // 4, gelu, p0,
            lin.panels if p1 is None else p1)
    return y


def _ref(x, w, b, gelu):
    y = x.astype(np.float64) @ _dequant(w).T.astype(np.float64)
    if b is not None:
        y += b
    return _gelu(y) if gelu else y


def _assert_close(y, ref, tol=3e-4):
    err = np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err <= tol, f"max error {err:.2e} of |y|'s scale"


@pytest.mark.parametrize("k", [384, 768, 1536, 1537])
@pytest.mark.parametrize("n", [384, 1000, 1536])
def test_matches_dequantised_weights(k, n):
    lin, w, b = _packed(n, k, seed=k + n)
    rng = np.random.default_rng(k * n)
    for m in (1, 7, 16, 33, 64, 200):
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[m // 2] = 0  # a zero row: y = bias
        x[-1] *= 50  # rows on different scales (each row has its own)
        y = _run(lin, x, n)
        _assert_close(y, _ref(x, w, b, False))
        np.testing.assert_array_equal(y[m // 2], b)


@pytest.mark.parametrize("k,n", [(384, 1000), (1537, 384)])
def test_large_m_gelu_and_no_bias(k, n):
    lin, w, _ = _packed(n, k, seed=1, bias=False)
    x = np.random.default_rng(2).standard_normal((640, k)).astype(np.float32)
    for gelu in (False, True):
        _assert_close(_run(lin, x, n, gelu), _ref(x, w, None, gelu))


def test_every_row_count_and_short_k():
    """Both sides of the in-register threshold agree with the reference; K below a k pair, odd K; fp32 weights
    never take the integer path."""
    for k in (1, 2, 3, 17, 385):
        lin, w, b = _packed(40, k, seed=k)
        assert all(lin.integer_path(m) for m in (1, 7, IN_REGISTER_ROWS + 1, 640)) and not lin.integer_path(0)
        assert not _packed(40, k, fmt="fp32")[0].integer_path(640)
        x = np.random.default_rng(k).standard_normal((IN_REGISTER_ROWS + 2, k)).astype(np.float32)
        for m in (1, 2, 6, 7, IN_REGISTER_ROWS, IN_REGISTER_ROWS + 1, IN_REGISTER_ROWS + 2):
            _assert_close(_run(lin, x[:m], 40, True), _ref(x[:m], w, b, True))


def test_rows_do_not_depend_on_their_batch():
    """Per-row quantisation and exact integer sums: a row's output is the same bits alone, in a query-sized
    batch (in-register tiles) and in a corpus-sized one (the L1-buffer path, several row blocks)."""
    k, n = 1537, 300
    lin, _, _ = _packed(n, k, seed=11)
    x = np.random.default_rng(12).standard_normal((250, k)).astype(np.float32)
    whole = _run(lin, x, n)
    np.testing.assert_array_equal(_run(lin, x[:7], n), whole[:7])
    for i in (0, 6, 97, 249):
        np.testing.assert_array_equal(_run(lin, x[i:i + 1], n), whole[i:i + 1])


def test_k_beyond_the_integer_sums_named():
    k = 2147483647 // (127 * 256) + 1  # kMaxIntK + 1: int16 activations would need fewer than 8 bits
    w = np.zeros((16, k), np.float32)
    with pytest.raises(ValueError, match=f"int8 weights need K <= {k - 1} .* got K = {k}"):
        ext.EXT.PackedLinear(w.ctypes.data, 16, k, 0, "int8")


def test_strided_x_and_y_and_panel_ranges():
    """ldx / ldy wider than the rows; a panel range writes only its columns (partial last panel included)."""
    k, n, m = 200, 1000, 50
    lin, w, b = _packed(n, k, seed=3)
    xbuf = np.random.default_rng(4).standard_normal((m, k + 24)).astype(np.float32)
    x = xbuf[:, 5:5 + k]
    ybuf = np.full((m, n + 40), np.nan, np.float32)
    y = ybuf[:, 8:8 + n]
    ref = _ref(x, w, b, False)
    p_mid = lin.panels // 2
    _run(lin, x, n, p0=p_mid, p1=lin.panels, y=y)
    assert np.isnan(y[:, :p_mid * PANEL]).all() and np.isnan(ybuf[:, :8]).all() and np.isnan(ybuf[:, 8 + n:]).all()
    _run(lin, x, n, p0=0, p1=p_mid, y=y)
    _assert_close(y, ref)
    assert np.isnan(ybuf[:, :8]).all() and np.isnan(ybuf[:, 8 + n:]).all()


def test_concurrent_panel_ranges_share_x():
    """As the native forward splits a GEMM: threads run disjoint panel ranges on the same x at once (each
    quantises x into its own buffers)."""
    k, n, m = 768, 1536, 96
    lin, w, b = _packed(n, k, seed=5)
    x = np.random.default_rng(6).standard_normal((m, k)).astype(np.float32)
    want = _run(lin, x, n, True)
    _assert_close(want, _ref(x, w, b, True))
    for _ in range(3):
        y = np.full((m, n), np.nan, np.float32)
        chunks = [(lin.panels * i // 12, lin.panels * (i + 1) // 12) for i in range(12)]
        with cf.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda r: _run(lin, x, n, True, r[0], r[1], y), chunks))
        np.testing.assert_array_equal(y, want)


def test_tiny_and_non_finite_rows():
    k, n, m = 64, 32, 12
    lin, w, b = _packed(n, k, seed=7)
    x = np.random.default_rng(8).standard_normal((m, k)).astype(np.float32)
    x[1] = 1e-35  # below the quantiser's floor: y = bias
    x[2, 5] = np.nan
    x[3, 7] = np.inf
    y = _run(lin, x, n)
    np.testing.assert_array_equal(y[1], b)
    assert np.isnan(y[2]).all() and not np.isfinite(y[3]).any()
    ok = [0] + list(range(4, m))
    _assert_close(y[ok], _ref(x[ok], w, b, False))


def test_matches_fp32_weights_holding_the_dequantised_values():
    """The int8 path against fp32 weights that hold the dequantised values: the same y to ~1e-4."""
    k, n, m = 384, 400, 64
    _, w, b = _packed(n, k, seed=9)
    lin8 = ext.EXT.PackedLinear(w.ctypes.data, n, k, b.ctypes.data, "int8")
    wd = _dequant(w)
    lin32 = ext.EXT.PackedLinear(wd.ctypes.data, n, k, b.ctypes.data, "fp32")
    x = np.random.default_rng(10).standard_normal((m, k)).astype(np.float32)
    _assert_close(_run(lin8, x, n, True), _run(lin32, x, n, True))


def test_bad_format_named():
    w = np.zeros((16, 8), np.float32)
    with pytest.raises(ValueError, match="unknown weights format 'int4'; choose fp32, bf16 or int8"):
        ext.EXT.PackedLinear(w.ctypes.data, 16, 8, 0, "int4")


def test_native_encoder_int8_at_batch_64(minilm):
    """A batch of 64 queries (~500 token rows: x quantised once per GEMM and shared by both threads' panel
    ranges) stays within int8's bound of fp32, as at batch 1; each query's embedding in the batch is the bits
    of its batch-1 embedding, at 1 and 2 threads (columns split at batch 1, texts split at batch 64)."""
    from hlm_engine.ops.cpu import native

    texts = [f"{t} {i}" for i, t in enumerate(["cordless drill", "white semi-gloss interior paint 5 gallon",
                                                "r19 insulation", "heavy duty silver tarp with grommets"] * 16)]
    ids = minilm.tokenize(texts)
    assert len(ids) == 64 and sum(map(len, ids)) >= 64 * 8
    fp32 = native.embed_ids(native.build(minilm.model, "fp32", 2), ids)
    for threads in (1, 2):
        nat = native.build(minilm.model, "int8", threads)
        out = native.embed_ids(nat, ids)
        cos = (out * fp32).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(fp32, axis=1)
        assert cos.min() >= 0.995, f"min cos {cos.min()}"
        for i in (0, 1, 33, 63):
            np.testing.assert_array_equal(native.embed_ids(nat, [ids[i]])[0], out[i])
