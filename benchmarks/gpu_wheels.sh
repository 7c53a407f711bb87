#!/usr/bin/env bash
# Prepares the folder of wheels that benchmarks/gpu_check.sh installs on a GPU machine without
# network. Run it from a clone, on any machine with network (pip downloads for the target's
# Python, not this machine's):
#
#     bash benchmarks/gpu_wheels.sh [OUT_DIR] [PYTHON_VERSION]      # defaults: benchmarks/gpu_wheels 3.12
#
# then copy the clone (or just benchmarks/ with OUT_DIR in it) to the GPU machine. The folder
# holds RecBole 1.2.1 (installed there with --no-deps: no Ray, which a single run never imports), RecBole's small
# run-time needs, tensorboard's writer and its two pure needs, and this package's own wheel:
# about 10 MB. Nothing in it replaces the machine's torch, numpy, pandas, scipy, pyarrow,
# scikit-learn or matplotlib. It is not committed (benchmarks/gpu_wheels/ is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/gpu_wheels}
version=${2:-3.12}
mkdir -p "$out"
pip download --no-deps --only-binary=:all: --dest "$out" \
    --python-version "$version" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 thop texttable tabulate \
    tensorboard absl-py protobuf pyyaml tqdm psutil packaging
pip wheel --no-deps --wheel-dir "$out" .
ls -l "$out"
# what travels to the GPU machine must stay well under the 64 MiB a check may carry
size=$(du -sk "$out" | cut -f1)
echo "wheels: $((size / 1024)) MiB in $out"
if (( size > 32 * 1024 )); then
    echo "error: $out holds $((size / 1024)) MiB of wheels, more than the 32 MiB this check allows itself" >&2
    exit 1
fi
