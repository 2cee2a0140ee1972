"""Launched by test_ddp.py under torchrun (or directly for the 1-process reference): one refine run."""
import json
import os
import sys

os.environ.pop("HLM_DATA_DIR", None)

from hlm_engine.train.refine import RefineConfig, train_refine  # noqa: E402

if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    log = train_refine(RefineConfig(**args))
    from hlm_engine.train import distributed
    distributed.cleanup()
