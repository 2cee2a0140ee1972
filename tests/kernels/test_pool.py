"""Pooling (mean / CLS / last token) + Matryoshka truncation + L2 normalisation in one kernel."""
import pytest
import torch
from .kernel_checks import DTYPES, assert_within_torch_error, packed

from hlm_engine.kernels.pool import pool, pool_ref

LENS = [1, 7, 33, 127]


@pytest.mark.parametrize("dim,normalize", [(None, True), (100, True), (None, False), (64, False)],
                         ids=["full-norm", "mrl100-norm", "full-raw", "mrl64-raw"])
@pytest.mark.parametrize("mode", ["mean", "cls", "last"])
@pytest.mark.parametrize("H", [384, 769])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pool(mode, H, dim, normalize, dtype):
    cu, _ = packed(LENS)
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(sum(LENS), H, generator=g) + 0.5).to(dtype)
    out = pool(hidden, cu, mode, dim, normalize)
    out_t = pool_ref(hidden, cu, mode, dim, normalize)
    out64 = pool_ref(hidden.double(), cu, mode, dim, normalize)
    assert_within_torch_error(out, out_t, out64, dtype, f"pool {mode} H={H} dim={dim}")
    if normalize:
        torch.testing.assert_close(out.double().norm(dim=-1), torch.ones(len(LENS), dtype=torch.float64),
                                   atol=2e-3, rtol=0)


def test_pool_single_sequence_single_token():
    hidden = torch.randn(1, 8)
    cu = torch.tensor([0, 1], dtype=torch.int32)
    for mode in ("mean", "cls", "last"):
        torch.testing.assert_close(pool(hidden, cu, mode, None, True), pool_ref(hidden, cu, mode, None, True))


def test_pool_errors():
    hidden, cu = torch.randn(3, 8), torch.tensor([0, 3], dtype=torch.int32)
    with pytest.raises(ValueError, match="pooling mode"):
        pool(hidden, cu, "max")
    with pytest.raises(ValueError, match="dim"):
        pool(hidden, cu, "mean", dim=9)
