#!/usr/bin/env bash
# The main job end to end on the embedded single-machine default:
# a venv, `client up` (SQLite, a broker, one worker), a real train-vae job, pictures from it.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/client ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
fi
client=.venv/bin/client
$client up
model=$($client submit train-vae --epochs 2 --train-limit 4096)
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
echo; echo "the broker and worker keep running; stop them with: $client down"
