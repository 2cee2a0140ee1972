"""`hlm reproduce`: the whole HARNESS-LM recipe on the whole catalogue (`make reproduce`); see
`hlm_engine.train.reproduce`. The parser is built without importing the training modules' heavy parts."""
from __future__ import annotations


def register(sub):
    from hlm_engine.train.reproduce import register as reg
    reg(sub)
