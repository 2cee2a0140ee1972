"""One suite, two schedulers: every test taking `impl` runs against the C++ core and the Python twin."""
import pytest

from hlm_engine.serving.scheduler import _cpp_module

IMPLS = ["cpp", "python"]


@pytest.fixture(params=IMPLS)
def impl(request):
    if request.param == "cpp" and _cpp_module() is None:
        pytest.skip("C++ scheduler not built (HLM_BUILD_EXT=0): `python setup.py build_ext --inplace`")
    return request.param


@pytest.fixture(scope="session")
def tiny_encoder():
    """A 1-layer, 128-wide random-init BERT with MiniLM's real tokenizer: cheap, still a real model."""
    import os

    from hlm_engine import Encoder, preset
    from hlm_engine.hub import resolve
    cfg = preset("minilm-l6", num_layers=1, hidden_size=128, num_heads=4, num_kv_heads=4, head_dim=32,
                 intermediate_sizes=[64], max_length=32)
    return Encoder.from_config(cfg, os.path.join(resolve("minilm"), "tokenizer.json"), backend="torch")


@pytest.fixture
def one_torch_thread():
    """Tiny GEMMs on a shared CPU: intra-op threads only add spin-wait (several x slower when loaded)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
