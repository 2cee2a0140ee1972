"""Tiny random-initialised BERT models with the real MiniLM tokenizer, saved as model folders: the training
phases run on them in seconds (the real teacher/student are only for quality, measured by the demo)."""
import os

import pytest


def make_tiny(path: str, hidden: int, inter: int, seed: int, vocab_size: int | None = None) -> str:
    from hlm_engine import Encoder
    from hlm_engine.config import preset
    from hlm_engine.hub import resolve
    over = dict(num_layers=2, hidden_size=hidden, num_heads=4, num_kv_heads=4, head_dim=hidden // 4,
                intermediate_sizes=[inter] * 2, max_length=32)
    if vocab_size:
        over["vocab_size"] = vocab_size
    Encoder.from_config(preset("minilm-l6", **over), os.path.join(resolve("minilm"), "tokenizer.json"),
                        seed=seed).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_factory():
    return make_tiny


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{"teacher": 96-d folder, "student": 64-d folder, "shared": a scratch dir for shared caches}."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {"teacher": make_tiny(str(root / "teacher"), 96, 192, seed=1),
            "student": make_tiny(str(root / "student"), 64, 128, seed=2),
            "shared": str(root)}


@pytest.fixture
def sample_data(monkeypatch):
    """The phases read the small sample set shipped in the package: the same data with or without
    $HLM_DATA_DIR (opted into per module, so other suites here keep the real data)."""
    monkeypatch.delenv("HLM_DATA_DIR", raising=False)
