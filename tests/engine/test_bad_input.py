"""Bad input fails loudly and names what was wrong; over-long input is truncated (or raises on request);
weights load only from safetensors or a weights-only `.bin` (never arbitrary pickle).

Model-folder cases use a copy of the installed MiniLM folder's small files (config, tokenizer, pooling)
with the weight file replaced, so each case is a real folder on disk.
"""
import os
import shutil

import numpy as np
import pytest
import torch

from hlm_engine import Encoder, EncoderConfig
from hlm_engine.config import SUPPORTED_ARCHS
from hlm_engine.hub import resolve

LONG_TEXT = "cordless drill " * 400  # ~800 word pieces, far past any max_length


# ------------------------------------------------------------------ texts
@pytest.mark.parametrize("bad, why", [("", "empty"), ("   \t\n", "empty or whitespace"), (None, "None"),
                                      (42, "int"), (b"drill", "bytes"), (["drill"], "list")])
def test_bad_text_names_its_index(minilm, bad, why):
    texts = ["drill", "paint roller", bad, "hose"]
    for call in (minilm.encode, minilm.tokenize):
        with pytest.raises(ValueError, match=r"input 2\b") as e:
            call(texts)
        assert why in str(e.value)


def test_single_string_is_refused(minilm):
    with pytest.raises(ValueError, match="single str"):
        minilm.encode("cordless drill")


def test_empty_list_gives_empty_matrix(minilm):
    out = minilm.encode([])
    assert out.shape == (0, minilm.dim) and out.dtype == np.float32


@pytest.mark.parametrize("kw, match", [({"batch_size": 0}, "batch_size"), ({"dim": 0}, "dim"),
                                       ({"dim": 385}, "dim"), ({"dim": 1.5}, "dim")])
def test_bad_options(minilm, kw, match):
    with pytest.raises(ValueError, match=match):
        minilm.encode(["drill"], **kw)


def test_overlong_input_is_truncated_to_max_length(minilm):
    ids = minilm.tokenize(["drill", LONG_TEXT])
    assert len(ids[1]) == minilm.max_length == 256
    assert ids[1][0] == ids[0][0] and ids[1][-1] == ids[0][-1]  # [CLS] ... [SEP] kept, as the reference does
    emb = minilm.encode(["drill", LONG_TEXT])
    assert emb.shape == (2, minilm.dim) and np.isfinite(emb).all()
    # Truncation means the tail is ignored: the same prefix with a different tail embeds identically.
    other_tail = minilm.encode([LONG_TEXT + " garden hose" * 50])
    assert float(emb[1] @ other_tail[0]) >= 0.99999


def test_overlong_input_raises_in_raise_mode():
    enc = Encoder.from_pretrained("minilm", backend="torch", truncation="raise")
    assert enc.encode(["drill"]).shape == (1, enc.dim)
    with pytest.raises(ValueError, match=r"input 1 is too long.*max_length=256"):
        enc.encode(["drill", LONG_TEXT])


def test_max_length_option():
    enc = Encoder.from_pretrained("minilm", backend="torch", max_length=16)
    assert enc.max_length == 16 and len(enc.tokenize([LONG_TEXT])[0]) == 16
    with pytest.raises(ValueError, match="max_length"):
        Encoder.from_pretrained("minilm", backend="torch", max_length=1)
    with pytest.raises(ValueError, match="truncation"):
        Encoder.from_pretrained("minilm", backend="torch", truncation="cut")


# ------------------------------------------------------------------ architectures
def test_unknown_architecture_names_the_supported_ones(tmp_path):
    folder = _folder_without_weights(tmp_path)
    with open(folder / "config.json", "w") as f:
        f.write('{"model_type": "gpt2", "architectures": ["GPT2Model"], "hidden_size": 64}')
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(str(folder))
    assert "gpt2" in str(e.value) and all(a in str(e.value) for a in SUPPORTED_ARCHS)
    with pytest.raises(ValueError, match="supported: " + ", ".join(SUPPORTED_ARCHS)):
        EncoderConfig(arch="t5", vocab_size=10, hidden_size=8, num_layers=1, num_heads=1, num_kv_heads=1,
                      head_dim=8, intermediate_sizes=[16], max_position_embeddings=32, norm_eps=1e-6)


def test_corrupt_config_json_names_the_file(tmp_path):
    folder = _folder_without_weights(tmp_path)
    (folder / "config.json").write_text('{"model_type": "bert", ')
    with pytest.raises(ValueError, match=r"config\.json.*corrupt"):
        Encoder.from_pretrained(str(folder))


# ------------------------------------------------------------------ weight files
def _folder_without_weights(tmp_path):
    """Copy of the MiniLM folder minus its weight files (a few hundred KB)."""
    src = resolve("minilm")
    dst = tmp_path / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino", "*.md"))
    return dst


def _hf_state_dict():
    from safetensors.torch import load_file
    return load_file(os.path.join(resolve("minilm"), "model.safetensors"))


def test_missing_weight_file_names_the_folder_and_expected_files(tmp_path):
    folder = _folder_without_weights(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        Encoder.from_pretrained(str(folder))
    assert str(folder) in str(e.value) and "model" in str(e.value) and ".safetensors" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all" * 10, "truncated"])
def test_corrupt_safetensors_names_the_file(tmp_path, content):
    folder = _folder_without_weights(tmp_path)
    target = folder / "model.safetensors"
    if content == "truncated":  # a real file cut in half, as after an interrupted copy
        with open(os.path.join(resolve("minilm"), "model.safetensors"), "rb") as f:
            content = f.read(20_000_000)
    target.write_bytes(content)
    with pytest.raises(ValueError, match="corrupt") as e:
        Encoder.from_pretrained(str(folder))
    assert str(target) in str(e.value)


def test_missing_tensor_names_the_tensor_and_file(tmp_path):
    from safetensors.torch import save_file
    folder = _folder_without_weights(tmp_path)
    sd = _hf_state_dict()
    dropped = next(k for k in sd if "layer.3.intermediate.dense.weight" in k)
    del sd[dropped]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(KeyError) as e:
        Encoder.from_pretrained(str(folder))
    assert "layer.3.intermediate.dense.weight" in str(e.value) and "model.safetensors" in str(e.value)


def test_wrong_tensor_shape_is_reported(tmp_path):
    from safetensors.torch import save_file
    folder = _folder_without_weights(tmp_path)
    sd = _hf_state_dict()
    k = next(k for k in sd if "layer.0.output.dense.weight" in k)
    sd[k] = sd[k][:, :100].contiguous()
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"shape"):
        Encoder.from_pretrained(str(folder))


def test_bin_with_plain_tensors_loads_and_matches(tmp_path, minilm):
    folder = _folder_without_weights(tmp_path)
    torch.save(_hf_state_dict(), str(folder / "pytorch_model.bin"))
    enc = Encoder.from_pretrained(str(folder), backend="torch")
    texts = ["cordless drill", "3 in. deck screws"]
    np.testing.assert_array_equal(enc.encode(texts), minilm.encode(texts))


class _Payload:
    """Unpickling this runs os.mkdir(marker): any loader that executes pickle code would create it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("payload", ["code", "object"])
def test_bin_with_pickled_objects_is_refused(tmp_path, payload):
    folder = _folder_without_weights(tmp_path)
    marker = str(tmp_path / "pwned")
    sd = dict(_hf_state_dict())
    first = next(iter(sd))
    sd[first] = _Payload(marker) if payload == "code" else _PlainObject()
    with open(folder / "pytorch_model.bin", "wb") as f:  # torch.save pickles arbitrary objects
        torch.save(sd, f)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*unsafe"):
        Encoder.from_pretrained(str(folder))
    assert not os.path.exists(marker), "pickle code ran while loading weights"
    if payload == "code":  # control, without executing it: the pickle really calls os.mkdir when unpickled
        assert {("posix", "mkdir"), ("os", "mkdir")} & _pickle_globals(folder / "pytorch_model.bin")


def _pickle_globals(path) -> set[tuple[str, str]]:
    """(module, name) of every global a torch.save zip's data.pkl imports, read with pickletools (no execution)."""
    import pickletools
    import zipfile
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add((strings[-2], strings[-1]))
        elif op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
    return found


class _PlainObject:
    pass
