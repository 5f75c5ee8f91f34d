#!/bin/bash
# Prepare what a GPU run through the device tool carries (both folders are git-ignored):
#   .whl/      wheels the device image lacks (Python 3.12, x86-64)
#   .devdata/  the corpus' training split (xz tarball: eval subjects left out) and this kit
# The tree that travels is capped at 64 MiB; SimpleITK's wheel (53 MB) does not fit, so the kit
# imports torchio over a placeholder and train_all_gpu.py runs --no-geometric-augmentation.
# Usage (repo root, after `make corpus`): bash recipes/device/bundle.sh
set -euo pipefail
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
grep -qx "/.devdata/" .git/info/exclude 2>/dev/null || echo "/.devdata/" >> .git/info/exclude
mkdir -p .whl .devdata
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
for pkg in deepinv==0.5.0 torchio==1.2.1 nibabel==5.4.2 diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types typing-inspection deprecated==1.3.1 natsort==8.4.0 typing_extensions importlib_metadata; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $platforms -d .whl "$pkg"
done
files=$(python3 -c "import json; m = json.load(open('corpus/v1/manifest.json')); print(' '.join(r['file'] for r in m['subjects'] if r['split'] == 'train'))")
(cd corpus/v1 && tar cf - manifest.json $files) | xz -9 -T2 > .devdata/train.tar.xz
cp -r recipes/device/stub recipes/device/run.sh recipes/device/split_weights.py .devdata/
du -sh .whl .devdata
echo "tracked files: $(git ls-files -z | xargs -0 stat -c %s | awk '{s+=$1} END {printf "%.1f MiB", s/2^20}') (all three must stay under 64 MiB)"
