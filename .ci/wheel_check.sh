#!/usr/bin/env bash
# The installed package, not the source tree: build the wheel, install it into a new virtualenv,
# and run a shipped recipe by name from an empty folder. The new venv borrows the heavy
# dependencies (torch, deepinv, ...) from the project's .venv through a plain path line (whose
# own .pth files, the editable install among them, are not processed), so what is tested is the
# wheel's own content: modules, recipes, weights, templates, sample volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip wheel --no-deps --no-build-isolation -q . -w "$tmp/wheel"
"$PY" -c "import sys; print(sys.base_prefix)" >/dev/null
base=$("$PY" -c "import sys, os; print(os.path.join(sys.base_prefix, 'bin', 'python3'))")
"$base" -m venv "$tmp/venv"
deps=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$deps" > "$site/zz-project-deps.pth"
"$tmp/venv/bin/python" -m pip install --no-deps --no-index -q "$tmp"/wheel/*.whl
cd "$tmp"
where=$("$tmp/venv/bin/python" -c "import deepinv_tunable, os; print(os.path.dirname(deepinv_tunable.__file__))")
case "$where" in
  "$tmp"/venv/*) ;;
  *) echo "wheel check: deepinv_tunable imported from $where, not from the installed wheel" >&2; exit 1 ;;
esac
"$tmp/venv/bin/deepinv-tunable" run demo_learned_prior --out "$tmp/out" --quiet
test -s "$tmp/out/reconstruction.nii.gz" && test -s "$tmp/out/report.html"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert r['complete'], r" "$tmp/out/metrics.json"
echo "wheel check: ok (installed at $where)"
