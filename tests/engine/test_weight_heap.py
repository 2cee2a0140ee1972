"""Packed weights on huge-page chunks (csrc/weight_heap.h): every weight panel from 64 KB up is cut from shared
2 MB-aligned chunks, small blocks (biases, scales) from the ordinary heap; freeing the last block of a chunk
returns it (the current chunk's pages are released and it is reused); weights packed into a reused chunk, with a
partial last panel and odd K, give the right products in every format; concurrent packers get disjoint, correct
blocks; and a whole native encoder's weights land there and go when it is dropped."""
import concurrent.futures as cf
import gc
import sys

import numpy as np
import pytest
import torch

from hlm_engine.ops.cpu import ext

pytestmark = [pytest.mark.skipif(not ext.available(), reason="CPU kernels not built (HLM_BUILD_EXT=0) or no AVX2+FMA"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge-page chunks are Linux only")]


def _linear(n, k, fmt, seed=0):
    w = (np.random.default_rng(seed).standard_normal((n, k)) * 0.05).astype(np.float32)
    return ext.EXT.PackedLinear(w.ctypes.data, n, k, 0, fmt), w


def _run(lin, x, n):
    y = np.full((x.shape[0], n), np.nan, np.float32)
    lin.run(x.ctypes.data, x.shape[0], x.shape[1], y.ctypes.data, n, False, 0, lin.panels)
    return y


def test_large_panels_on_chunks_small_ones_not_and_freed():
    base = ext.EXT.weight_heap_bytes()
    small, _ = _linear(16, 64, "fp32")  # 4 KB of panels: ordinary heap
    assert ext.EXT.weight_heap_bytes() == base
    big, _ = _linear(1536, 384, "fp32")  # 2.4 MB
    assert ext.EXT.weight_heap_bytes() >= base + 1536 * 384 * 4
    del big
    gc.collect()
    assert ext.EXT.weight_heap_bytes() == base
    del small


@pytest.mark.parametrize("fmt", ["fp32", "bf16", "int8"])
def test_reused_chunk_memory_reads_as_zero(fmt):
    """Pack, free everything (the chunk is emptied and reused), pack again with a partial last panel and odd K."""
    first = [_linear(1000, 301, fmt, seed=s)[0] for s in range(4)]
    del first
    gc.collect()
    n, k = 1000, 301  # 1000 = 62 panels + 8 columns; odd K
    lin, w = _linear(n, k, fmt, seed=9)
    x = np.random.default_rng(1).standard_normal((5, k)).astype(np.float32)
    y = _run(lin, x, n)
    if fmt == "int8":
        mx = np.abs(w).max(1, keepdims=True)
        w = np.clip(np.rint(w / (mx / 127)), -127, 127) * (mx / 127)
    elif fmt == "bf16":
        w = torch.from_numpy(w).to(torch.bfloat16).float().numpy()
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(y, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_concurrent_packers():
    def pack(seed):
        lin, w = _linear(640, 384, "fp32", seed=seed)
        x = np.random.default_rng(seed).standard_normal((3, 384)).astype(np.float32)
        return _run(lin, x, 640), x @ w.T

    with cf.ThreadPoolExecutor(4) as pool:
        for y, ref in pool.map(pack, range(12)):
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_native_encoder_weights_on_the_heap_and_released():
    from hlm_engine.config import EncoderConfig
    from hlm_engine.models.bert import PostNormEncoder
    from hlm_engine.ops.cpu import native
    cfg = EncoderConfig(arch="bert", vocab_size=300, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                        head_dim=32, intermediate_sizes=[512, 512], max_position_embeddings=64, norm_eps=1e-12,
                        type_vocab_size=2, max_length=32)
    model = PostNormEncoder(cfg).eval()
    base = ext.EXT.weight_heap_bytes()
    nat = native.build(model, "fp32", 1)
    assert ext.EXT.weight_heap_bytes() - base >= 2 * (3 * 128 + 2 * 512) * 128 * 4  # QKV, FFN-in / -out panels
    del nat
    gc.collect()
    assert ext.EXT.weight_heap_bytes() == base
