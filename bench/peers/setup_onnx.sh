#!/usr/bin/env bash
# The peers of bench/test_onnx_peer.py in their own venv (ONNX Runtime and OpenVINO ship their own thread
# pools and OpenMP; kept out of hlm-engine's venv so nothing they load can change how our runtime runs).
# Idempotent.
#
#     bash bench/peers/setup_onnx.sh            # -> bench/.venv-peers/bin/python
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PEERS_VENV:-$here/../.venv-peers}"
python="${PYTHON:-python3.11}"
stamp="$venv/.installed"
if [[ -f "$stamp" && "$stamp" -nt "$here/onnx-requirements.txt" ]]; then
    echo "peers venv up to date: $venv"
    exit 0
fi
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q -r "$here/onnx-requirements.txt"
"$venv/bin/python" -c "import onnxruntime, openvino, tokenizers, onnx"
touch "$stamp"
echo "peers venv ready: $venv"
