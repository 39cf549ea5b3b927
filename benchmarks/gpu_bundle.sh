#!/usr/bin/env bash
# Packs into .gpu/ (ignored by git) what benchmarks/gpu_session.sh needs on a lent GPU machine and its
# image lacks: the wheels of aerun's pure-Python dependencies that are not in that image (Hydra,
# OmegaConf, ANTLR's runtime, the joblib launcher) and the MNIST .gz files. Nothing is downloaded there.
#   bash benchmarks/gpu_bundle.sh [DATA_ROOT]        (default ../shared/datasets)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${1:-${DATA_ROOT:-../shared/datasets}}
PIP=${PIP:-.venv/bin/python -m pip}
# The versions this checkout's venv runs with (the GPU image's torch, numpy, PyYAML, joblib are its own).
PACKAGES=(hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0)
[[ -f $DATA_ROOT/MNIST/raw/train-images-idx3-ubyte.gz ]] || {
    echo "gpu_bundle: no MNIST .gz files in $DATA_ROOT/MNIST/raw; pass the folder that holds MNIST/raw" >&2; exit 2; }
rm -rf .gpu.tmp && mkdir -p .gpu.tmp/wheels .gpu.tmp/datasets/MNIST/raw
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu.tmp/wheels "${PACKAGES[@]}"
# ANTLR's runtime 4.9.3 (what OmegaConf 2.3 needs) is published as a source archive only: build its wheel.
$PIP wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w .gpu.tmp/wheels
cp "$DATA_ROOT"/MNIST/raw/*-ubyte.gz .gpu.tmp/datasets/MNIST/raw/
rm -rf .gpu && mv .gpu.tmp .gpu
du -sh .gpu; ls .gpu/wheels
