"""Shared fixtures. The Triton interpreter must be chosen before `triton` is first imported, so it is set
here, at the top of the root conftest, for the whole suite (kernels run on CPU tensors here)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def _data_dir():
    d = os.environ.get("HLM_DATA_DIR")
    return d if d and os.path.isdir(os.path.join(d, "homedepot")) else None


@pytest.fixture(scope="session")
def data_dir():
    d = _data_dir()
    if d is None:
        pytest.skip("real data not available: set HLM_DATA_DIR to the folder holding homedepot/ and queries/ "
                    "(CI passes ../shared/data)")
    return d


@pytest.fixture(scope="session")
def minilm():
    from hlm_engine import Encoder
    return Encoder.from_pretrained("minilm", backend="torch")


@pytest.fixture(scope="session")
def mpnet():
    from hlm_engine import Encoder
    return Encoder.from_pretrained("mpnet", backend="torch")


@pytest.fixture(scope="session")
def homedepot_dev(data_dir):
    from hlm_engine.retrieval.data import load_homedepot
    return load_homedepot("dev", data_dir)
