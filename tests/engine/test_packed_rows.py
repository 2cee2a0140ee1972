"""Many-row GEMMs on packed activations (csrc/packed_gemm.h `pack_rows` / `run_packed`): from kPackRows (96)
rows the fp32 and bf16 kernels read x packed into 6-row strips, swept in row blocks and K chunks. Against
float64 x @ W^T (bf16: the bf16-rounded weights) at rows around the threshold and far above it, K below,
in one chunk and in several equal chunks of <= 384 steps (odd too), N with a partial last panel, GELU, no
bias, strided x / y, panel ranges; and the native forward's split of a big batch's texts over its threads
equals one thread."""
import numpy as np
import pytest
import torch

from hlm_engine.ops.cpu import ext

pytestmark = pytest.mark.skipif(not ext.available(), reason="CPU kernels not built (HLM_BUILD_EXT=0) or no AVX2+FMA")

PANEL = 16


def _bf16(w: np.ndarray) -> np.ndarray:
    return torch.from_numpy(w).to(torch.bfloat16).float().numpy()


def _gelu(v):
    return 0.5 * v * (1 + torch.erf(torch.from_numpy(v / np.sqrt(2))).numpy())


def _case(n, k, fmt, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    lin = ext.EXT.PackedLinear(w.ctypes.data, n, k, b.ctypes.data if bias else 0, fmt)
    return lin, (_bf16(w) if fmt == "bf16" else w), b


def _ref(x, w, b, gelu):
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    if b is not None:
        y += b
    return _gelu(y) if gelu else y


def _run(lin, x, y, gelu=False, p0=0, p1=None):
    lin.run(x.ctypes.data, x.shape[0], x.strides[0] // 4, y.ctypes.data, y.strides[0] // 4, gelu, p0,
            lin.panels if p1 is None else p1)
    return y


@pytest.mark.parametrize("fmt", ["fp32", "bf16"])
@pytest.mark.parametrize("n,k", [(100, 40), (257, 256), (48, 771), (130, 1024)])
@pytest.mark.parametrize("m", [95, 96, 97, 151, 400])
def test_matches_float64(fmt, n, k, m):
    lin, w, b = _case(n, k, fmt, seed=n * k + m)
    x = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
    x[-1] *= 30
    y = _run(lin, x, np.full((m, n), np.nan, np.float32), gelu=m % 2 == 1)
    ref = _ref(x, w, b, m % 2 == 1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_strided_rows_no_bias_and_panel_ranges():
    n, k, m = 90, 300, 250
    lin, w, _ = _case(n, k, "fp32", bias=False)
    xs = np.random.default_rng(1).standard_normal((m, k + 13)).astype(np.float32)
    x = xs[:, 5:5 + k]  # rows k + 13 floats apart
    ys = np.full((m, n + 7), 7.0, np.float32)
    y = ys[:, :n]
    ref = _ref(x, w, None, False)
    _run(lin, x, y, p0=0, p1=2)  # columns 0-31 only
    np.testing.assert_allclose(y[:, :2 * PANEL], ref[:, :2 * PANEL], rtol=1e-4, atol=1e-4)
    assert np.isnan(y[:, 2 * PANEL:]).sum() == 0 and (y[:, 2 * PANEL:] == 7.0).all()
    _run(lin, x, y, p0=2, p1=lin.panels)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert (ys[:, n:] == 7.0).all()  # nothing written past the real columns


def test_same_result_as_row_blocks_below_the_threshold():
    """The packed path and the small-batch path (the same rows in calls of 64) agree to float rounding."""
    n, k, m = 200, 384, 300
    lin, w, b = _case(n, k, "fp32")
    x = np.random.default_rng(3).standard_normal((m, k)).astype(np.float32)
    whole = _run(lin, x, np.empty((m, n), np.float32))
    parts = np.concatenate([_run(lin, np.ascontiguousarray(x[r:r + 64]), np.empty((min(64, m - r), n), np.float32))
                            for r in range(0, m, 64)])
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["fp32", "bf16"])
@pytest.mark.parametrize("cuts", [[0, 250], [0, 1, 7, 100, 250], [0, 5, 6, 11, 13, 186, 187, 250], [0, 250, 250]])
def test_rows_packed_in_ranges(fmt, cuts):
    """pack_rows over row ranges that cut strips anywhere (the native forward's threads each pack a range;
    whole 6-row strips take the transposing copy, cut ones the scalar one) gives the rows packed at once."""
    n, k, m = 70, 389, 250  # K: one chunk past 384 -> two chunks, K % 4 = 1 leaves a scalar tail
    lin, w, b = _case(n, k, fmt, seed=11)
    xs = np.random.default_rng(4).standard_normal((m, k + 3)).astype(np.float32)
    x = xs[:, :k]  # rows k + 3 floats apart
    y = np.full((m, n), np.nan, np.float32)
    lin.run_packed_in_parts(x.ctypes.data, m, xs.shape[1], y.ctypes.data, n, cuts)
    np.testing.assert_allclose(y, _ref(x, w, b, False), rtol=1e-4, atol=1e-4)
    whole = _run(lin, x, np.empty((m, n), np.float32))
    np.testing.assert_array_equal(y, whole)  # same strips, same sums: the same bits as run()
