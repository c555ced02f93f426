#!/usr/bin/env bash
# The GPU checks and figures of issues 3 and 4, in one call on a lent GPU machine (the device tool).
#
# Prepare here once, from the repo root (the device has torch, torchvision and transformers, not
# diffusers; it reaches no network, so MNIST travels gzipped, ~11 MB, and is unpacked there):
#   mkdir -p .device/whl .device/data/MNIST/raw
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .device/whl diffusers==0.42.1
#   for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > ".device/data/MNIST/raw/$(basename "$f").gz"; done
# Then: run(command="bash bench/device_check.sh", carry=[".device"], timeout_s=540)
# and copy the figures from $OUT into BENCHMARKS.md with the device's name and the date.
set -uo pipefail
out=${OUT:-/tmp/genq-device-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 GENQ_DATA_ROOT="$PWD/.device/data" PYTHONPATH="$PWD:/tmp/site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
gunzip -kf .device/data/MNIST/raw/*.gz  # the original IDX files, as torchvision finds them
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"

# the CUDA-graph step trains like the eager one; a job resumes on the GPU (no SQL/Celery here: --noconftest)
python3 -m pytest -q -p no:cacheprovider --noconftest tests/unit/test_vae_cuda.py 2>&1 | tee "$out/tests.txt"
python3 bench/vae_epoch.py --device cuda --data-root "$GENQ_DATA_ROOT" 2>&1 | tee "$out/vae_epoch.txt"
python3 -m bench.sd --device cuda --size full 2>&1 | tee "$out/sd.txt"
