#!/usr/bin/env bash
# The main job end to end on the embedded single-machine default:
# a venv, `client up` (SQLite, a broker, one worker), a real train-vae job, pictures from it.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/client ]; then
  echo "== installing genq and its dependencies into .venv (PyTorch's default build is ~6 GB with CUDA;"
  echo "   set GENQ_TORCH_INDEX=https://download.pytorch.org/whl/cpu for its CPU build, under 1 GB, on a machine without a GPU)"
  python3 -m venv .venv
  .venv/bin/pip install --progress-bar on --upgrade pip
  if [ -n "${GENQ_TORCH_INDEX:-}" ]; then
    .venv/bin/pip install --progress-bar on --index-url "$GENQ_TORCH_INDEX" torch==2.14.1 torchvision==0.29.1 \
      || echo "== $GENQ_TORCH_INDEX did not serve torch 2.14.1: installing the default build instead"
  fi
  .venv/bin/pip install --progress-bar on -e '.[dev]'
fi
client=.venv/bin/client
# One torch thread for the demo's worker (override with GENQ_TORCH_THREADS=N): on this 2-core machine
# it trains in ~40 s when idle and ~1.5 min beside two busy processes, where two threads took 2.5-3 min.
GENQ_TORCH_THREADS=${GENQ_TORCH_THREADS:-1} $client up
# A half-width model (capacity 32, latent 2 for the manifold), 2 epochs over all 60,000 images in
# batches of 64 at lr 2e-3: ~1,900 steps, test loss ~159 nats per image (the seed's full run: ~150).
model=$($client submit train-vae --capacity 32 --batch-size 64 --lr 2e-3 --epochs 2)
echo "train-vae job: $model"
$client wait "$model"
interpolation=$($client submit interpolate --model "$model" --from-digit 7 --to-digit 1)
samples=$($client submit sample-vae --model "$model")
$client wait "$interpolation"
$client wait "$samples"
$client show "$model"
for job in "$model" "$interpolation" "$samples"; do
  echo; echo "artifacts of $job:"; $client artifacts "$job"
done
home=$($client config --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["home"])')
echo; echo "the store, logs and artifacts are in $home (the artifacts in $home/artifacts/<job id>/)"
echo "the dashboard (the ui: URL printed above) shows these jobs with their pictures"
echo "the broker, worker and dashboard keep running; stop them with: $client down"
