"""Split a saved model's ``model.safetensors`` into parts under the device tool's 16 MiB return
limit, and join them back.

    python split_weights.py MODEL_DIR OUT_DIR          # on the device: parts + config + card
    python split_weights.py --join PARTS_DIR MODEL_DIR  # here: model.safetensors again
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

PART_BYTES = 15 * 2**20


def split(model: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = load_file(model / "model.safetensors")
    parts: list[dict] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if parts[-1] and size + nbytes > PART_BYTES:
            parts.append({})
            size = 0
        parts[-1][key] = state[key].contiguous()
        size += nbytes
    for i, part in enumerate(parts):
        save_file(part, out / f"model.part{i}.safetensors")
    for name in ("config.json", "README.md"):
        if (model / name).is_file():
            shutil.copy(model / name, out / name)
    print(f"{model}: {len(state)} tensors in {len(parts)} parts -> {out}")


def join(parts_dir: Path, model: Path) -> None:
    model.mkdir(parents=True, exist_ok=True)
    state: dict = {}
    for part in sorted(parts_dir.glob("model.part*.safetensors")):
        state.update(load_file(part))
    if not state:
        raise SystemExit(f"no model.part*.safetensors in '{parts_dir}'")
    save_file(state, model / "model.safetensors")
    for name in ("config.json", "README.md"):
        if (parts_dir / name).is_file():
            shutil.copy(parts_dir / name, model / name)
    print(f"{len(state)} tensors -> {model / 'model.safetensors'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--join", action="store_true", help="join PARTS_DIR's parts into MODEL_DIR")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    (join if args.join else split)(args.source, args.target)
