#!/usr/bin/env bash
# The peer of bench/test_http_load.py: infinity-emb in its own venv (it pins sentence-transformers < 4,
# hence transformers 4.x and numpy < 2, which cannot share hlm-engine's venv). Idempotent.
#
#     bash bench/peers/setup_infinity.sh            # -> bench/.venv-infinity/bin/infinity_emb
#
# torch is the same CPU build as hlm-engine's (2.13.0, found on the machine's wheel path like the main venv's),
# so both servers run the same BLAS under the same load.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${INFINITY_VENV:-$here/../.venv-infinity}"
python="${PYTHON:-python3.11}"
stamp="$venv/.installed"
if [[ -f "$stamp" && "$stamp" -nt "$here/infinity-requirements.txt" ]]; then
    echo "infinity venv up to date: $venv"
    exit 0
fi
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q -r "$here/infinity-requirements.txt"
"$venv/bin/infinity_emb" --help >/dev/null
touch "$stamp"
echo "infinity venv ready: $venv"
