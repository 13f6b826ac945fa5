#!/usr/bin/env bash
# Idempotent set-up of the RecBole 1.2.1 peer: its own virtual environment, apart from .venv.
# Quick the second time: nothing is installed when the stamp for this script's version is there.
#
# RecBole 1.2.1 declares old pins (colorlog==4.7.2, colorama==0.4.4, ray<=2.6.3) and an
# unpinned torch. torch goes in first, pinned to the CPU wheel, so that nothing pulls CUDA
# packages; recbole itself goes in with --no-deps, followed by the dependencies it really
# imports for SASRec training and evaluation (ray is only used by recbole.quick_start, which
# the runner does not import; thop and plotly only by optional helpers). pandas stays on 2.2:
# under pandas 3 (copy-on-write, Series.agg on the whole series) RecBole's token remapping
# fails and its in-place fillna silently does nothing. numpy 2 needs three aliases that
# recbole_sasrec.py puts back at start-up (np.float_, np.complex_, np.unicode_).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VENV=.cache/peers/recbole-venv
STAMP=$VENV/.installed-$(sha256sum scripts/peers/setup-recbole.sh | cut -c1-16)
DEPS=(
    "numpy>=2.0,<2.3"
    "scipy>=1.6.0"
    "pandas==2.2.3"
    "tqdm>=4.48.2"
    "colorlog==4.7.2"
    "colorama==0.4.4"
    "scikit-learn>=0.23.2"
    "pyyaml>=5.1.0"
    "tensorboard>=2.5.0"
    "tabulate>=0.8.10"
    "texttable>=0.9.0"
    "psutil>=5.9.0"
)

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    echo "== installing torch (CPU wheel) first, then recbole==1.2.1 --no-deps and its imports"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==2.13.0"
    "$VENV/bin/pip" install -q "${DEPS[@]}" "torch==2.13.0"
    "$VENV/bin/pip" install -q --no-deps "recbole==1.2.1"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("== recbole venv:", ", ".join(f"{p} {md.version(p)}" for p in ("recbole", "torch", "numpy", "pandas", "scipy")))
PY
