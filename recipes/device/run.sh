#!/bin/bash
# On the device machine (repo root, with .whl and .devdata carried):
#   bash .devdata/run.sh MINUTES KEY...      e.g. bash .devdata/run.sh 6 hvae
# installs the wheels, unpacks the corpus' training split, runs recipes/train_all_gpu.py for
# KEY... in MINUTES of training in all, and copies each model to $OUT with its weights split in
# parts under the 16 MiB return limit (recipes/device/README.md puts them back together).
set -u
minutes=$1
shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/.devdata/stub:$PWD PYTHONUNBUFFERED=1
mkdir -p corpus/v1 && tar xJf .devdata/train.tar.xz -C corpus/v1 || exit 4
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
# where a step's time goes (about half a minute), before the budget is spent on training
timeout 90 python3 recipes/device/profile_step.py hvae --workers 12 2>&1 | grep "patches/s"
python3 recipes/train_all_gpu.py --out /tmp/gpu --only "$@" --minutes "$minutes" \
    --no-geometric-augmentation --workers 12 > "$OUT/log.txt" 2>&1
echo "train rc $?"
tail -5 "$OUT/log.txt"
for model in /tmp/gpu/*/model; do
    python3 .devdata/split_weights.py "$model" "$OUT/$(basename "$(dirname "$model")")"
done
ls -laR "$OUT"
