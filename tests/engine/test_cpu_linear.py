"""The prepacked oneDNN linear used for fp32 CPU inference: same math as F.linear, invalidated by weight
updates, never used where autograd needs a backward."""
import gc

import pytest
import torch
import torch.nn.functional as F

from hlm_engine import cpu_linear

pytestmark = pytest.mark.skipif(not cpu_linear._ENABLED, reason="oneDNN (mkldnn) not available in this torch")


@pytest.mark.parametrize("rows", [1, 7, 64, 300])  # 300: above _MAX_ROWS, the F.linear path
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_matches_f_linear(rows, activation):
    g = torch.Generator().manual_seed(rows)
    lin = torch.nn.Linear(96, 160)
    x = torch.randn(rows, 96, generator=g)
    ref = F.linear(x, lin.weight, lin.bias)
    ref = F.gelu(ref) if activation == "gelu" else ref
    with torch.inference_mode():
        assert cpu_linear.usable(x, lin.weight) == (rows <= cpu_linear._MAX_ROWS)
        out = cpu_linear.linear(x, lin.weight, lin.bias, activation)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # no bias
        torch.testing.assert_close(cpu_linear.linear(x, lin.weight), x @ lin.weight.T, atol=1e-5, rtol=1e-5)


def test_weight_update_invalidates_the_packed_copy():
    lin, x = torch.nn.Linear(32, 48), torch.randn(5, 32)
    with torch.inference_mode():
        cpu_linear.linear(x, lin.weight, lin.bias)
    with torch.no_grad():
        lin.weight.mul_(-3.0)  # what an optimizer step does: in place, version bumped
    with torch.inference_mode():
        out = cpu_linear.linear(x, lin.weight, lin.bias)
    torch.testing.assert_close(out, F.linear(x, lin.weight, lin.bias).detach(), atol=1e-5, rtol=1e-5)


def test_training_keeps_autograd():
    lin, x = torch.nn.Linear(16, 8), torch.randn(4, 16)
    assert not cpu_linear.usable(x, lin.weight)  # grad mode on: the packed op has no backward
    cpu_linear.linear(x, lin.weight, lin.bias, "gelu").sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_cache_is_freed_with_the_weight_and_module_still_pickles(tmp_path):
    lin = torch.nn.Linear(16, 8)
    with torch.inference_mode():
        cpu_linear.linear(torch.randn(2, 16), lin.weight)
    assert id(lin.weight) in cpu_linear._cache
    torch.save(lin, tmp_path / "m.pt")  # nothing opaque hangs off the parameter
    key = id(lin.weight)
    del lin
    gc.collect()
    assert key not in cpu_linear._cache


def test_other_dtypes_fall_back():
    w = torch.randn(8, 16, dtype=torch.float16)
    x = torch.randn(2, 16, dtype=torch.float16)
    with torch.inference_mode():
        assert not cpu_linear.usable(x, w)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="relu"):
        cpu_linear.linear(torch.randn(2, 4), torch.randn(3, 4), activation="relu")
