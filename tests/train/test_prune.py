"""Structured pruning: the kept units/layers are the most important ones, and the dense pruned model
computes exactly what the original computes with those units zeroed / those layers skipped."""
import numpy as np
import pytest
import torch

from hlm_engine import Encoder
from hlm_engine.models.packing import pack
from hlm_engine.train.prune import calibration_stats, prune, prune_to, round_width, select_layers, select_units

TEXTS = ["cordless drill", "5 gal. white exterior paint", "brass door knob with lock", "led shop light 4 ft",
         "pvc pipe 1/2 in. x 10 ft", "garden hose nozzle", "ceiling fan with remote", "a"]


@pytest.fixture(scope="module")
def small_bert():
    import os

    from hlm_engine import preset
    from hlm_engine.hub import resolve
    cfg = preset("minilm-l6", num_layers=3, intermediate_sizes=[128, 96, 160])
    return Encoder.from_config(cfg, os.path.join(resolve("minilm"), "tokenizer.json"), seed=1)


@pytest.fixture(scope="module")
def small_qwen():
    import os

    from hlm_engine import EncoderConfig
    from hlm_engine.hub import resolve
    cfg = EncoderConfig(arch="qwen3", vocab_size=30522, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                        head_dim=16, intermediate_sizes=[128, 128, 64], max_position_embeddings=512, norm_eps=1e-6,
                        max_length=64, pooling="last", causal=True, qk_norm=True, attention_bias=False)
    return Encoder.from_config(cfg, os.path.join(resolve("minilm"), "tokenizer.json"), seed=2)


def test_selection_follows_scores():
    bi = np.array([0.3, 0.05, 0.2, 0.01, 0.5])
    assert select_layers(bi, 3) == [0, 2, 4]
    imp = np.array([5.0, 1.0, 3.0, 4.0, 0.5])
    assert select_units(imp, 2).tolist() == [0, 3]
    assert round_width(1000) == 1024 and round_width(10) == 64
    with pytest.raises(ValueError):
        select_layers(bi, 0)


@pytest.mark.parametrize("which", ["small_bert", "small_qwen"])
def test_ffn_pruning_equals_zeroed_units(which, request):
    enc = request.getfixturevalue(which)
    _, acts = calibration_stats(enc, TEXTS, batch_size=4)
    keep = {0: select_units(acts[0], 64), 2: select_units(acts[2], 32)}
    # the kept units are exactly the top-scoring ones
    for i, k in keep.items():
        assert set(k.tolist()) == set(np.argsort(-acts[i])[: len(k)].tolist())
    small = prune(enc, [0, 1, 2], keep)
    assert small.config.intermediate_sizes == [64, enc.config.intermediate_sizes[1], 32]
    ref = Encoder(enc.config, __import__("copy").deepcopy(enc.model), enc.tokenizer, None)
    with torch.no_grad():
        for i, k in keep.items():
            layer = ref.model.layers[i]
            drop = torch.ones(enc.config.intermediate_sizes[i], dtype=torch.bool)
            drop[torch.as_tensor(k)] = False
            if hasattr(layer, "up"):
                layer.up.weight[drop] = 0
                layer.up.bias[drop] = 0
            else:
                inter = enc.config.intermediate_sizes[i]
                layer.gate_up.weight[:inter][drop] = 0
    np.testing.assert_allclose(small.encode(TEXTS), ref.encode(TEXTS), atol=2e-6)


@pytest.mark.parametrize("which", ["small_bert", "small_qwen"])
def test_layer_pruning_equals_skipping(which, request):
    enc = request.getfixturevalue(which)
    small = prune(enc, [0, 2])
    b = pack(enc.tokenize(TEXTS))
    with torch.no_grad():
        np.testing.assert_allclose(small.model(b).numpy(), enc.model(b, skip_layers={1}).numpy(), atol=1e-6)


def test_pruned_save_load_roundtrip(small_bert, tmp_path):
    small, info = prune_to(small_bert, TEXTS, num_layers=2, ffn_width=64, batch_size=4)
    assert len(info["kept_layers"]) == 2 and small.config.intermediate_sizes == [64, 64]
    small.save_pretrained(str(tmp_path / "p"))
    back = Encoder.from_pretrained(str(tmp_path / "p"), backend="torch")
    assert back.config.intermediate_sizes == [64, 64] and back.config.num_layers == 2
    np.testing.assert_array_equal(back.encode(TEXTS), small.encode(TEXTS))
