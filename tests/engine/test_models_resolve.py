"""Model names, aliases and paths resolve to local folders; unknown names fail with the list of known ones.
Never contacts a model hub (and, with HLM_NO_DOWNLOAD=1, not PyPI either)."""
import os

import pytest

from hlm_engine import Encoder
from hlm_engine.hub import ALIASES, DEFAULT_MODELS, models_dir, resolve


@pytest.mark.parametrize("name", ["minilm", "mpnet"])
def test_default_names_resolve_to_installed_folders(name):
    folder = resolve(name)
    assert os.path.isdir(folder) and os.path.exists(os.path.join(folder, "model.safetensors"))
    assert folder == os.path.join(models_dir(), DEFAULT_MODELS[name].folder)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_are_case_insensitive(alias):
    assert resolve(alias) == resolve(ALIASES[alias]) == resolve(alias.upper())


def test_student_and_teacher_aliases():
    assert resolve("student") == resolve("all-MiniLM-L6-v2") == resolve("minilm")
    assert resolve("teacher") == resolve("sentence-transformers/all-mpnet-base-v2".split("/")[1])


def test_folder_paths_resolve_to_absolute(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve("m") == str(tmp_path / "m")
    assert resolve(tmp_path / "m") == str(tmp_path / "m")  # os.PathLike too
    assert resolve(resolve("minilm")) == resolve("minilm")


@pytest.mark.parametrize("name", ["bert-large-uncased", "minilm-l12", "sentence-transformers/all-MiniLM-L6-v2"])
def test_unknown_name_lists_the_defaults(name):
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        resolve(name)
    msg = str(e.value)
    assert name in msg
    if isinstance(e.value, ValueError):
        assert all(k in msg for k in DEFAULT_MODELS) and "local folders" in msg


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "no" / "such" / "model"))
    with pytest.raises(FileNotFoundError):
        resolve("./not-here")


@pytest.mark.parametrize("bad", [None, 3, ["minilm"]])
def test_non_string_is_value_error(bad):
    with pytest.raises(ValueError, match="name or a folder path"):
        resolve(bad)


def test_not_installed_without_download_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("HLM_MODELS_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HLM_NO_DOWNLOAD", "1")
    with pytest.raises(FileNotFoundError, match=r"not installed.*install minilm"):
        resolve("minilm")
    with pytest.raises(FileNotFoundError):
        resolve("teacher", install=True)


def test_encoder_from_unknown_name_fails_before_loading():
    with pytest.raises(ValueError, match="unknown model 'bert-base-uncased'"):
        Encoder.from_pretrained("bert-base-uncased")


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        Encoder.from_pretrained(str(tmp_path))
