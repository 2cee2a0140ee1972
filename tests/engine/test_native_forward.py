"""The one-call native forward (csrc/native_encoder.h, hlm_engine.ops.cpu.native) against the PyTorch
reference forward, the oracle: BERT, MPNet (relative bias) and Qwen3 / Qwen2 (GQA, causal, RoPE, q/k-norm)
shapes with pruned per-layer widths and a projection head; one-token and mixed-length batches; 1 and 2
threads; concurrent callers; bf16 / int8 weights against the reference on the same rounded weights and
within their bounds vs fp32; bad formats, shapes and inputs named in the error; no extension -> says why.
"""
import concurrent.futures as cf
import dataclasses
import os

import numpy as np
import pytest
import torch

from hlm_engine import Encoder, EncoderConfig
from hlm_engine.hub import resolve
from hlm_engine.models.bert import relative_position_bucket
from hlm_engine.ops.cpu import ext, native

pytestmark = pytest.mark.skipif(not native.status()[0], reason=native.status()[1])

WIDTHS = [96, 40, 257]  # pruned: a different FFN width per layer, one not a multiple of the 16-column panel
TEXTS = ["cordless drill", "x", "Ridgecraft 20-Volt Lithium-Ion Cordless 1/2 in. Drill/Driver Kit",
         "white semi-gloss interior paint 5 gallon", "r19 insulation",
         "20 ft. x 30 ft. heavy duty silver tarp with grommets every 18 in. for boats, trucks and " * 3]
FP32_COS, BF16_COS, INT8_COS = 0.99999, 0.9999, 0.99


def _tokenizer():
    return os.path.join(resolve("minilm"), "tokenizer.json")


def _config(arch: str, **kw) -> EncoderConfig:
    common = dict(vocab_size=30522, hidden_size=64, num_layers=3, intermediate_sizes=list(WIDTHS),
                  max_position_embeddings=514, max_length=256, name=f"native-{arch}")
    if arch == "bert":
        c = EncoderConfig(arch="bert", num_heads=4, num_kv_heads=4, head_dim=16, norm_eps=1e-12, type_vocab_size=2,
                          **common)
    elif arch == "mpnet":
        c = EncoderConfig(arch="mpnet", num_heads=4, num_kv_heads=4, head_dim=16, norm_eps=1e-5, pad_token_id=1,
                          position_offset=2, relative_attention_num_buckets=32, **common)
    else:  # Qwen3 (GQA 4:2, qk-norm, SwiGLU, last-token pooling) / Qwen2 (q/k/v biases, no qk-norm); [SEP] as EOS
        c = EncoderConfig(arch=arch, num_heads=4, num_kv_heads=2, head_dim=16, norm_eps=1e-6, pooling="last",
                          causal=True, qk_norm=arch == "qwen3", attention_bias=arch == "qwen2",
                          append_eos_token_id=102, rope_theta=10000.0, **common)
    return dataclasses.replace(c, **kw)


def _encoder(cfg: EncoderConfig, seed: int = 0) -> Encoder:
    """A random model whose every parameter matters: norms around 1, biases and MPNet's bias table non-zero."""
    enc = Encoder.from_config(cfg, _tokenizer(), backend="torch", seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in enc.model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.startswith("rel_bias"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return enc


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _batches(enc: Encoder) -> list[list[list[int]]]:
    ids = enc.tokenize(TEXTS)
    return [ids, [ids[0]], [[ids[0][0]]], [ids[1], [ids[0][0]], ids[5]]]  # mixed, one text, one token, both


CASES = {
    "bert": _config("bert"),
    "bert-proj-cls": _config("bert", pooling="cls", output_dim=48),
    "mpnet": _config("mpnet"),
    "qwen3": _config("qwen3"),
    "qwen3-d128-proj": _config("qwen3", hidden_size=96, num_heads=4, num_kv_heads=1, head_dim=128, output_dim=80),
    "qwen2": _config("qwen2", pooling="mean"),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_fp32_matches_reference(case, threads):
    enc = _encoder(CASES[case])
    nat = native.build(enc.model, "fp32", threads)
    assert nat.threads == threads and nat.format == "fp32" and nat.embed_dim == enc.dim
    for ids in _batches(enc):
        ref = enc.embed_ids(ids)
        out = native.embed_ids(nat, ids)
        assert out.shape == ref.shape and out.dtype == np.float32
        assert _cos(out, ref).min() >= FP32_COS, f"{case}: min cos {_cos(out, ref).min()}"
        np.testing.assert_allclose(out, ref, atol=2e-5)
    # Matryoshka truncation and unnormalised output, as Encoder.embed_ids(dim=, normalize=)
    ids = _batches(enc)[0]
    for dim, normalize in [(16, True), (None, False)]:
        np.testing.assert_allclose(native.embed_ids(nat, ids, normalize, dim), enc.embed_ids(ids, normalize, dim),
                                   rtol=2e-4, atol=2e-5)


def test_real_minilm_matches_reference(minilm):
    ids = minilm.tokenize(TEXTS)
    ref = minilm.embed_ids(ids)
    for threads in (1, 2):
        out = native.embed_ids(native.build(minilm.model, "fp32", threads), ids)
        assert _cos(out, ref).min() >= FP32_COS


def test_mpnet_buckets_match_reference_for_every_distance():
    n = 600
    rel = torch.arange(-n, n + 1)
    for buckets, max_distance in [(32, 128), (16, 64)]:
        ref = relative_position_bucket(rel, buckets, max_distance).numpy()
        assert ext.EXT.relative_position_buckets(buckets, max_distance, n) == ref.tolist()


def _rounded(enc: Encoder, fmt: str) -> Encoder:
    """The reference model on the weights the native format stores: bf16-rounded, or per-output-channel
    symmetric int8 (scale = max|w| / 127) dequantised. Embedding tables stay fp32 in every format."""
    clone = _encoder(enc.config)
    clone.model.load_state_dict(enc.model.state_dict())
    with torch.no_grad():
        for name, p in clone.model.named_parameters():
            if p.dim() != 2 or name.startswith(("embed.", "rel_bias")):
                continue
            if fmt == "bf16":
                p.copy_(p.to(torch.bfloat16).float())
            else:
                scale = p.abs().amax(1, keepdim=True).clamp(min=1e-30) / 127
                p.copy_(torch.round(p / scale).clamp(-127, 127) * scale)
    return clone


@pytest.mark.parametrize("fmt,bound", [("bf16", BF16_COS), ("int8", INT8_COS)])
@pytest.mark.parametrize("case", ["bert-proj-cls", "mpnet", "qwen3"])
def test_compressed_weights_are_the_rounded_model(case, fmt, bound):
    """bf16 / int8 change only the stored weights: the reference on the same rounded weights is matched to
    fp32 precision, and the embeddings stay within the format's bound of the fp32 model's."""
    enc = _encoder(CASES[case])
    ids = _batches(enc)[0]
    nat = native.build(enc.model, fmt, 2)
    assert nat.format == fmt
    out = native.embed_ids(nat, ids)
    assert _cos(out, _rounded(enc, fmt).embed_ids(ids)).min() >= FP32_COS
    assert _cos(out, enc.embed_ids(ids)).min() >= bound


@pytest.mark.parametrize("fmt,bound,ratio", [("bf16", BF16_COS, 2), ("int8", INT8_COS, 4)])
def test_real_minilm_compressed_within_bounds(minilm, fmt, bound, ratio):
    ids = minilm.tokenize(TEXTS)
    fp32 = native.build(minilm.model, "fp32", 1)
    nat = native.build(minilm.model, fmt, 1)
    assert _cos(native.embed_ids(nat, ids), native.embed_ids(fp32, ids)).min() >= bound
    assert fp32.weight_bytes / nat.weight_bytes > 0.9 * ratio  # the bytes a query streams


def test_big_batch_and_long_text_at_two_threads(minilm):
    """Row blocks past 64 (and compressed panels widened once per block) and a 256-token text."""
    ids = minilm.tokenize([f"{t} {i}" for i in range(30) for t in TEXTS[:4]] + [" ".join(TEXTS * 8)])
    assert max(map(len, ids)) == minilm.max_length and sum(map(len, ids)) > 600
    ref = minilm.embed_ids(ids)
    for fmt, bound in [("fp32", FP32_COS), ("int8", INT8_COS)]:
        assert _cos(native.embed_ids(native.build(minilm.model, fmt, 2), ids), ref).min() >= bound


@pytest.mark.parametrize("case", ["bert-proj-cls", "mpnet", "qwen3", "qwen2"])
def test_big_batch_split_over_threads_matches_one_thread(case):
    """From 96 token rows per thread the texts are split over the threads (contiguous groups of about equal
    tokens, each a whole forward on its own thread): the same embeddings as one thread and the reference,
    in order, with derived and explicit positions, and with fewer texts than threads."""
    enc = _encoder(CASES[case])
    ids = enc.tokenize([f"{t} {i}" for i in range(12) for t in TEXTS[:5]])
    assert sum(map(len, ids)) > 3 * 96
    ref = enc.embed_ids(ids)
    one = native.embed_ids(native.build(enc.model, "fp32", 1), ids)
    for threads in (2, 3):
        nat = native.build(enc.model, "fp32", threads)
        out = native.embed_ids(nat, ids)
        np.testing.assert_allclose(out, one, atol=2e-6)
        assert _cos(out, ref).min() >= FP32_COS
        flat = np.concatenate([np.asarray(t, np.int64) for t in ids])
        cu = np.concatenate([[0], np.cumsum([len(t) for t in ids])]).astype(np.int64)
        pos = np.concatenate([np.arange(len(t), dtype=np.int64) for t in ids])
        np.testing.assert_allclose(nat.forward(flat, pos, cu), out, atol=1e-6)
        few = [(ids[-1] * 10)[:enc.config.max_length]]  # one long text: not split, runs on the column split
        np.testing.assert_allclose(native.embed_ids(nat, few), native.embed_ids(native.build(enc.model, "fp32", 1), few),
                                   atol=2e-6)


def test_concurrent_callers_get_their_own_results():
    """Callers share one encoder (the pool serves one; the others run on their own threads, own scratch)."""
    enc = _encoder(CASES["qwen3"])
    nat = native.build(enc.model, "fp32", 2)
    batches = [b for b in _batches(enc) for _ in range(2)]
    want = [native.embed_ids(nat, b) for b in batches]
    with cf.ThreadPoolExecutor(4) as ex:
        for _ in range(10):
            got = list(ex.map(lambda b: native.embed_ids(nat, b), batches))
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, atol=1e-6)


def test_threads_can_change_between_calls():
    enc = _encoder(CASES["bert"])
    nat = native.build(enc.model, "fp32", 1)
    ids = _batches(enc)[0]
    one = native.embed_ids(nat, ids)
    nat.threads = 2
    assert nat.threads == 2
    np.testing.assert_allclose(native.embed_ids(nat, ids), one, atol=1e-6)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        nat.threads = 0


def test_bad_weights_format_and_threads_named():
    enc = _encoder(CASES["bert"])
    with pytest.raises(ValueError, match="unknown weights format 'fp16'; choose one of fp32, bf16, int8"):
        native.build(enc.model, "fp16")
    with pytest.raises(ValueError, match="unknown weights format 'int4'; choose fp32, bf16 or int8"):
        ext.EXT.NativeEncoder(enc.config.to_dict(), native.state_arrays(enc.model), "int4", 1)
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        native.build(enc.model, "fp32", 0)


def test_bad_shapes_named():
    enc = _encoder(CASES["qwen3"])
    cfg, sd = enc.config.to_dict(), native.state_arrays(enc.model)
    build = ext.EXT.NativeEncoder
    with pytest.raises(ValueError, match="missing tensor 'layers.1.gate_up.weight' \\(expected shape \\[80, 64\\]\\)"):
        build(cfg, {k: v for k, v in sd.items() if k != "layers.1.gate_up.weight"})
    bad = dict(sd, **{"layers.2.down.weight": np.zeros((64, 256), np.float32)})
    with pytest.raises(ValueError,
                       match="'layers.2.down.weight' has shape \\[64, 256\\], the config expects \\[64, 257\\]"):
        build(cfg, bad)
    with pytest.raises(ValueError, match="'embed.word.weight' must be a C-contiguous float32"):
        build(cfg, dict(sd, **{"embed.word.weight": sd["embed.word.weight"].astype(np.float64)}))
    with pytest.raises(ValueError, match="head_dim must be a positive multiple of 8, got 12"):
        build(dict(cfg, head_dim=12), sd)
    with pytest.raises(ValueError, match="config has no 'hidden_size'"):
        build({k: v for k, v in cfg.items() if k != "hidden_size"}, sd)


def test_bad_inputs_named():
    enc = _encoder(CASES["bert"])
    nat = native.build(enc.model)
    with pytest.raises(ValueError, match="token id 30522 at 1 is outside the vocabulary \\[0, 30522\\)"):
        native.embed_ids(nat, [[101, 30522]])
    with pytest.raises(ValueError, match="every text needs at least one token"):
        native.embed_ids(nat, [[101], []])
    with pytest.raises(ValueError, match="cannot encode an empty batch"):
        native.embed_ids(nat, [])
    with pytest.raises(ValueError, match="dim must be in \\[1, 64\\]"):
        native.embed_ids(nat, [[101]], dim=65)
    with pytest.raises(ValueError, match="text 0 has 515 tokens; the model has 514 positions"):
        native.embed_ids(nat, [[101] * 515])
    ids, cu = np.array([101, 102, 103]), np.array([0, 2, 4])
    with pytest.raises(ValueError, match="cu_seqlens\\[-1\\] = 4 but there are 3 tokens"):
        nat.forward(ids, None, cu)
    with pytest.raises(ValueError, match="positions must be 1-D with one entry per token"):
        nat.forward(ids, np.arange(2), np.array([0, 3]))


def test_explicit_positions_match_derived():
    enc = _encoder(CASES["qwen3"])
    nat = native.build(enc.model)
    ids = _batches(enc)[0]
    flat = np.concatenate([np.asarray(x) for x in ids])
    cu = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    pos = np.concatenate([np.arange(len(x)) for x in ids])
    np.testing.assert_array_equal(nat.forward(flat, pos, cu), native.embed_ids(nat, ids))


def test_without_the_extension_it_says_why(monkeypatch):
    """No extension (HLM_BUILD_EXT=0) or no AVX2 + FMA: status() says why and build() raises it, so a caller
    keeps the reference forward instead of a silent no-op."""
    monkeypatch.setattr(ext, "EXT", None)
    monkeypatch.setattr(ext, "WHY", "this CPU lacks AVX2 + FMA")
    ok, why = native.status()
    assert not ok and "AVX2 + FMA" in why
    with pytest.raises(RuntimeError, match="lacks AVX2 \\+ FMA"):
        native.build(_encoder(CASES["bert"]).model)


def test_for_model_decides_once_and_never_silently(monkeypatch, caplog):
    """The encoder's choice at load: native on the cpu backend; the per-op path elsewhere; compressed weights
    where they cannot be had raise; a cpu model without the extension logs why and keeps the per-op path."""
    model = _encoder(CASES["bert"]).model
    nat = native.for_model(model, "cpu", "cpu", torch.float32, "int8", 2)
    assert nat.format == "int8" and nat.threads == 2
    assert native.for_model(model, "torch", "cpu", torch.float32) is None  # torch = the pure reference
    with pytest.raises(ValueError, match="weights='bf16' needs the native CPU forward.*backend 'torch'"):
        native.for_model(model, "torch", "cpu", torch.float32, "bf16")
    monkeypatch.setenv("HLM_CPU_NATIVE", "0")
    assert native.for_model(model, "cpu", "cpu", torch.float32) is None
    monkeypatch.delenv("HLM_CPU_NATIVE")
    monkeypatch.setattr(ext, "EXT", None)
    monkeypatch.setattr(ext, "WHY", "this CPU lacks AVX2 + FMA")
    monkeypatch.setattr(native, "_logged", set())  # logged once per reason and process
    with caplog.at_level("WARNING"):
        assert native.for_model(model, "cpu", "cpu", torch.float32) is None
    assert "lacks AVX2 + FMA" in caplog.text
    with pytest.raises(RuntimeError, match="weights='int8': .*lacks AVX2 \\+ FMA"):
        native.for_model(model, "cpu", "cpu", torch.float32, "int8")
