"""The packed-weight linears of fp32 CPU inference (our AVX2 small-M kernel, oneDNN): same math as
F.linear, invalidated by weight updates, never used where autograd needs a backward."""
import gc

import pytest
import torch
import torch.nn.functional as F

from hlm_engine.ops.cpu import linear as cpu_linear

KERNELS = cpu_linear.available()
pytestmark = pytest.mark.skipif(not KERNELS, reason="neither the hlm kernel nor oneDNN is available here")


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


# 71: 64 rows then a 7-row block; 300: past both row limits
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 13, 64, 65, 71, 200, 300])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_matches_f_linear(kernel, rows, activation):
    g = torch.Generator().manual_seed(rows)
    lin = torch.nn.Linear(96, 160)
    x = torch.randn(rows, 96, generator=g)
    ref = F.linear(x, lin.weight, lin.bias)
    ref = F.gelu(ref) if activation == "gelu" else ref
    with torch.inference_mode():
        assert cpu_linear.usable(x, lin.weight, kernel) == (rows <= cpu_linear.max_rows(kernel))
        out = cpu_linear.linear(x, lin.weight, lin.bias, activation, kernel=kernel)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # no bias
        out = cpu_linear.linear(x, lin.weight, kernel=kernel)
        torch.testing.assert_close(out, x @ lin.weight.T, atol=1e-5, rtol=1e-5)


# Shapes that exercise the kernel's edges: N not a multiple of the 16-column panel (zero-padded last
# panel), odd K (the 2-accumulator tiles' tail), tiny K, and the real MiniLM / Qwen3-0.6B projection shapes;
# 7 rows: fp32's one-pass 7-row tile.
@pytest.mark.parametrize("n,k", [(1, 1), (17, 3), (33, 97), (384, 384), (1152, 384), (384, 1536), (3072, 1024)])
@pytest.mark.parametrize("rows", [1, 5, 6, 7, 11, 40])
def test_kernel_shapes(kernel, n, k, rows):
    g = torch.Generator().manual_seed(n * 131 + k + rows)
    w, b = torch.randn(n, k, generator=g) / k ** 0.5, torch.randn(n, generator=g)
    x = torch.randn(rows, k, generator=g)
    ref = (x.double() @ w.double().T + b.double()).float()
    with torch.inference_mode():
        out = cpu_linear.linear(x, w, b, kernel=kernel)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_numbers_at_any_thread_count(kernel, threads):
    """More torch threads move the hand-over to MKL (fewer rows on the packed kernel), never the result."""
    w, x = torch.randn(1536, 384) / 384 ** 0.5, torch.randn(40, 384)
    saved = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(1)
            one = cpu_linear.linear(x, w, kernel=kernel)
            torch.set_num_threads(threads)
            many = cpu_linear.linear(x, w, kernel=kernel)
    finally:
        torch.set_num_threads(saved)
    torch.testing.assert_close(many, one, atol=1e-5, rtol=1e-5)


def test_concurrent_callers_get_their_own_results(kernel):
    """Engine workers call the GEMM at once (the GIL is released), including the first call on a weight,
    where racing callers each pack it and the cache keeps one copy: a caller must keep its own copy alive
    for the call (this caught a use-after-free of the replaced copy)."""
    import concurrent.futures as cf
    xs = [torch.randn(7, 384) for _ in range(16)]
    with cf.ThreadPoolExecutor(4) as ex:
        for _ in range(8):  # fresh weights: every round starts with the first-use race
            w = torch.randn(768, 384) / 384 ** 0.5
            refs = [x @ w.T for x in xs]

            def run(i, w=w):
                with torch.inference_mode():
                    return i, cpu_linear.linear(xs[i], w, kernel=kernel)

            for i, out in ex.map(run, list(range(16)) * 2):
                torch.testing.assert_close(out, refs[i], atol=1e-4, rtol=1e-5)


def test_weight_update_invalidates_the_packed_copy(kernel):
    lin, x = torch.nn.Linear(32, 48), torch.randn(5, 32)
    with torch.inference_mode():
        cpu_linear.linear(x, lin.weight, lin.bias, kernel=kernel)
    with torch.no_grad():
        lin.weight.mul_(-3.0)  # what an optimizer step does: in place, version bumped
    with torch.inference_mode():
        out = cpu_linear.linear(x, lin.weight, lin.bias, kernel=kernel)
    torch.testing.assert_close(out, F.linear(x, lin.weight, lin.bias).detach(), atol=1e-5, rtol=1e-5)


def test_training_keeps_autograd(kernel):
    lin, x = torch.nn.Linear(16, 8), torch.randn(4, 16)
    assert not cpu_linear.usable(x, lin.weight, kernel)  # grad mode on: the packed ops have no backward
    cpu_linear.linear(x, lin.weight, lin.bias, "gelu", kernel=kernel).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_cache_is_freed_with_the_weight_and_module_still_pickles(kernel, tmp_path):
    lin = torch.nn.Linear(16, 8)
    with torch.inference_mode():
        cpu_linear.linear(torch.randn(2, 16), lin.weight, kernel=kernel)
    assert id(lin.weight) in cpu_linear._cache
    torch.save(lin, tmp_path / "m.pt")  # nothing opaque hangs off the parameter
    key = id(lin.weight)
    del lin
    gc.collect()
    assert key not in cpu_linear._cache


def test_other_dtypes_fall_back(kernel):
    w = torch.randn(8, 16, dtype=torch.float16)
    x = torch.randn(2, 16, dtype=torch.float16)
    with torch.inference_mode():
        assert not cpu_linear.usable(x, w, kernel)


def test_bad_shapes_are_named(kernel):
    with torch.inference_mode(), pytest.raises((ValueError, RuntimeError), match="16|12"):
        cpu_linear.linear(torch.randn(2, 12), torch.randn(8, 16), kernel=kernel)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="relu"):
        cpu_linear.linear(torch.randn(2, 4), torch.randn(3, 4), activation="relu")


def test_setting_is_validated():
    with pytest.raises(ValueError, match="HLM_CPU_PREPACK='fast'"):
        cpu_linear.choose("fast")
    assert cpu_linear.choose("0") is None and cpu_linear.choose("mkl") is None
    assert cpu_linear.choose("auto") == KERNELS[0]


def test_weights_made_under_inference_mode(kernel):
    """A model loaded inside torch.inference_mode has inference-tensor weights (no version counter)."""
    with torch.inference_mode():
        w, x = torch.randn(40, 24), torch.randn(3, 24)
        first = cpu_linear.linear(x, w, kernel=kernel)
        assert id(w) in cpu_linear._cache
        torch.testing.assert_close(cpu_linear.linear(x, w, kernel=kernel), first)
    torch.testing.assert_close(first, x @ w.T, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(len(KERNELS) < 2, reason="needs two packed kernels")
def test_switching_kernels_keeps_both_packed_copies():
    """Benchmarks alternate kernels per call: each keeps its packed copy instead of repacking."""
    w, x = torch.randn(48, 32), torch.randn(3, 32)
    with torch.inference_mode():
        copies = []
        for k in KERNELS * 2:
            cpu_linear.linear(x, w, kernel=k)
            copies.append(cpu_linear._cache[id(w)][2][k])
    assert copies[0] is copies[len(KERNELS)] and copies[1] is copies[len(KERNELS) + 1]


@pytest.mark.skipif(cpu_linear._HLM is None, reason="needs the built hlm kernel on an AVX2 CPU")
def test_vectorized_gelu_matches_erf_gelu():
    x = torch.cat([torch.linspace(-12, 12, 4001), torch.randn(10_003) * 3,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 1e4, -1e4])])
    ref = F.gelu(x.double()).float()
    with torch.inference_mode():
        out = cpu_linear.gelu(x.clone())  # odd length: the masked tail
    torch.testing.assert_close(out, ref, atol=3e-7, rtol=1e-6)
    y = torch.randn(5, 7, requires_grad=True)  # autograd on: F.gelu, not in place
    assert cpu_linear.gelu(y).grad_fn is not None
