#!/usr/bin/env bash
# On the GPU machine, after the parts of scripts/gpu/pack.sh were appended to /tmp/bundle.tar.xz
# in order: check the bundle, install it beside the machine's own Python 3.12 packages, and run
# the GPU benchmark (encoder vs bare session vs torch eager fp16; the worker with CUDA vs CPU on
# a comment-heavy stream; the sequence model on CUDA). Results go to $OUT (or ./gpu-results).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
want=$(cut -d' ' -f1 .gpu/p*/bundle.sha256 | head -n1)
have=$(sha256sum /tmp/bundle.tar.xz | cut -d' ' -f1)
[ "$want" = "$have" ] || { echo "bundle digest $have != $want: a part is missing" >&2; exit 3; }
B=/tmp/bundle
rm -rf "$B" && mkdir -p "$B"
tar -C "$B" -xJf /tmp/bundle.tar.xz
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$B"/wheels/*.whl
# this project too (its Faust transport is found through its entry point)
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
export PYTHONPATH="$B/ortsite:$PWD:/tmp/site"
export INTEREST_STREAM_HOME="$B/home"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 - <<'PY'
import onnxruntime as ort
from encoders.runtime.providers import choose_providers
print("onnxruntime", ort.__version__, ort.get_available_providers(), "->", choose_providers("auto"))
PY
# does the host's tokenising scale with its cores? (~40 s; it bounds the encoder from batch 128)
[ "${TOKSCALE:-1}" = 0 ] || python3 scripts/gpu/tokenize_scaling.py \
    "$B/home/models/all-MiniLM-L6-v2" 2 2>&1 | tee "$OUT/tokenize_scaling.log" \
    || echo "!! tokenize scaling failed: see above"
[ "${PROBE:-1}" = 0 ] || (python3 scripts/gpu/fp16_probe.py "$B/home/models/all-MiniLM-L6-v2" "$OUT/fp16_probe.json" 2>&1 \
    | grep -v -i warn | tee "$OUT/fp16_probe.log") || echo "!! fp16 probe failed: see above"
if [ "${ENCODER_ONLY:-0}" = 1 ]; then  # the encoder rows alone (a short second look)
    python3 - <<'PY' 2>&1 | tee "$OUT/encoder.log"
from streams.bench.common import BenchConfig, format_table
from streams.bench.gpu import encoder_rows
from streams.settings import Settings
print(format_table(encoder_rows(Settings.from_env(), BenchConfig.for_mode(False),
                                "CUDAExecutionProvider")))
PY
    exit 0
fi
# the gpu section: encoder, worker CUDA vs CPU, and the device item index vs faiss at 1M items
# (its catalog, faiss build and exact ranking: expected 1-2 min, not yet timed; --quick: 100k)
python3 -m streams.cli bench --sections "${SECTIONS:-gpu,sequence}" --events "${EVENTS:-30000}" \
    --comment-share "${SHARE:-1.0}" --out "$OUT/gpu.json" 2>&1 | tee "$OUT/bench.log"
