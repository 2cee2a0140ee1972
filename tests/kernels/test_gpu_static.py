"""The GPU compile gate (bench/gpu_static.py): every kernel, every path, fp16/bf16 (fp32 reported) at the
MiniLM, MPNet and Qwen3-student shapes (1x8, 64x16, 1x128 tokens), compiled for sm_80 and sm_90 by Triton's
compiler and the ptxas in its wheel, no GPU. It runs in a subprocess: the suite runs the kernels in the
interpreter, and the gate needs them compiled. Cached under ~/.cache/hlm/gpu_static (a few seconds once warm;
the first run after a kernel change compiles ~430 configurations)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Kernels that launch fewer programs than SMs for an 8-token query, each saying why in its launcher's
# docstring or comment (the phrase checked below): the work is one reduction or less than one wave.
UNDER_ONE_PER_SM = {"add_layernorm_fwd": "add_layernorm", "add_rmsnorm_fwd": "add_rmsnorm",
                    "pool_fwd": "pool", "attention_short_fwd": "attention"}


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    try:
        import triton.backends.nvidia.compiler as nv
        if not os.access(nv.get_ptxas(80).path, os.X_OK):
            pytest.skip("the Triton wheel ships no ptxas here")
    except ImportError as e:
        pytest.skip(f"Triton's NVIDIA backend is not installed ({e})")
    out = tmp_path_factory.mktemp("gate") / "gate.json"
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_static.py"), "--summary",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def test_gate_compiles_every_configuration(gate):
    s = gate["summary"]
    errors = [f"{r['model']} {r['shape']} {r['dtype']} sm_{r['arch']} {r['op']}: {r['error']}"
              for r in gate["rows"] if r.get("error")]
    assert not errors, "\n".join(errors[:20])
    # (MiniLM, MPNet: 7 launchers each; Qwen3: 8) x 3 shapes x 3 dtypes x 2 archs
    assert s["configurations"] == (7 + 7 + 8) * 3 * 3 * 2


def test_gate_16bit_paths_do_not_spill_and_fit_shared_memory(gate):
    bad = [f"{r['model']} {r['shape']} {r['dtype']} sm_{r['arch']} {r['op']} {r['kernel']} ({r['path']}): "
           f"{'; '.join(r['failures'])}" for r in gate["rows"] if r["failures"]]
    assert not bad, "\n".join(bad[:30])
    assert gate["summary"]["spilling_16bit"] == 0


def test_gate_16bit_dots_use_tensor_cores(gate):
    s = gate["summary"]
    assert s["dots_16bit"] > 0 and s["dots_16bit_on_tensor_cores"] == s["dots_16bit"]


def test_every_path_is_compiled(gate):
    paths = {(r["kernel"], r["path"]) for r in gate["rows"] if not r.get("error")}
    for want in [("linear_gemv", "gemv-splitk"), ("linear_fwd", "tiled"), ("swiglu_gate_up_fwd", "tiled"),
                 ("attention_short_fwd", "short"), ("varlen_attention_fwd", "flash"), ("pool_fwd", "mean"),
                 ("pool_fwd", "last"), ("qk_norm_rope_fwd", "norm"), ("add_rmsnorm_fwd", "rows"),
                 ("add_layernorm_fwd", "rows")]:
        assert want in paths, f"{want} never compiled; compiled: {sorted(paths)}"


def test_batch1_fills_every_sm_or_says_why(gate):
    """At 1x8 tokens every kernel launches >= 1 program per SM, or its launcher documents why not."""
    src = {}
    for r in gate["rows"]:
        if r.get("error") or r["shape"] != "1x8" or r["dtype"] == "fp32" or r["programs_per_sm"] >= 1:
            continue
        module = UNDER_ONE_PER_SM.get(r["kernel"])
        assert module, (f"{r['model']} sm_{r['arch']} {r['op']}: {r['kernel']} launches {r['programs']} programs "
                        f"for {r['programs'] / r['programs_per_sm']:.0f} SMs and is not documented as such")
        if module not in src:
            with open(os.path.join(ROOT, "kernels", f"{module}.py")) as f:
                src[module] = f.read()
        assert "per SM" in src[module], f"kernels/{module}.py does not say why it launches < 1 program per SM"
