"""TextTokenizer's two library calls (hlm_engine/tokenizer.py): one text goes through `Tokenizer.encode` (the
online query path), a batch through `encode_batch_fast`. Both must give exactly what the library's plain
`encode_batch` gives, for WordPiece (MiniLM) and byte-level BPE with the EOS we append (Qwen3), and both must
name an over-long input in truncation="raise" mode."""
import os

import pytest

from hlm_engine.hub import resolve
from hlm_engine.tokenizer import TextTokenizer

TEXTS = ["cordless drill", "White Semi-Gloss interior paint, 5 gal.", "r-19 insulation 15\" x 93\"", "é ñ 测试 🙂",
         "  leading and trailing spaces  ", "x" * 40]


def _tok(name, **kw):
    try:
        path = os.path.join(resolve(name), "tokenizer.json")
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"{name} not installed ({e})")
    return TextTokenizer(path, **kw)


@pytest.mark.parametrize("name,eos", [("minilm", None), ("qwen3-tokenizer", 151643)])
def test_one_text_and_batches_match_the_library(name, eos):
    tok = _tok(name, max_length=32, append_eos_token_id=eos)
    want = [e.ids for e in tok.tok.encode_batch(TEXTS)]
    if eos is not None:
        want = [ids if ids and ids[-1] == eos else ids + [eos] for ids in want]
    assert tok.encode(TEXTS) == want
    assert [tok.encode([t])[0] for t in TEXTS] == want
    assert tok.encode([]) == []
    assert tok.encode(["drill"], prompt="query: ") == tok.encode(["query: drill"])


@pytest.mark.parametrize("texts,index", [(["drill " * 100], 0), (["drill", "drill " * 100], 1)])
def test_raise_mode_names_the_input_alone_or_in_a_batch(texts, index):
    tok = _tok("minilm", max_length=16, truncation="raise")
    with pytest.raises(ValueError, match=rf"input {index} is too long: ~\d+ tokens > max_length=16"):
        tok.encode(texts)
