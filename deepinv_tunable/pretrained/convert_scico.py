r"""Convert scico's pretrained DnCNN denoisers (flax msgpack, BSD-3) to this package's
``save_pretrained`` format (JSON config + safetensors).

The weights come from the ``scico==0.0.7`` wheel fetched with pip (the same pinned-package
mechanism as the corpus: :func:`deepinv_tunable.data.corpus.fetch_package`); the SHA-256 of each
``.mpk`` file is checked against its pin. Facts of the format this conversion relies on:

* flax's msgpack stores arrays as extension type 1 holding ``(shape, dtype, raw bytes)``;
* convolution kernels are HWIO; torch wants OIHW (a transpose, no spatial flip: both
  frameworks compute a cross-correlation);
* the blocks are named ``ConvBNBlock_<n>`` and must be taken in numerical, not lexical, order;
* batch-norm ``scale``/``bias`` are in ``params``, ``mean``/``var`` in ``batch_stats``.

``L``, ``M`` and ``H`` were trained for Gaussian noise of std 0.06, 0.10 and 0.20 on images in
[0, 1] (scico's ``data/flax/README.rst``). The noise-conditional ``N`` models are not converted:
they diverge inside DPIR.

Usage (from the repository root; writes ``deepinv_tunable/pretrained/dncnn_scico_17{L,M,H}``)::

    python -m deepinv_tunable.pretrained.convert_scico

Verification against scico's own output: ``tests/data/scico_dncnn_reference.safetensors`` holds a
fixed input and scico's ``DnCNNNet`` outputs for it, written by the standalone script
``deepinv_tunable/pretrained/scico_reference.py`` in an environment with ``scico==0.0.7``, jax and
flax (no torch); ``tests/test_dncnn.py`` checks that the converted networks reproduce them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from ..data.corpus import DEFAULT_ROOT, Package, fetch_package, read_member, sha256_bytes
from ..nets.dncnn import DnCNN

SCICO = Package("scico", "0.0.7")
#: model letter -> (trained noise std, SHA-256 of ``scico/data/flax/dncnn17<letter>.mpk``)
MODELS = {
    "L": (0.06, "640d7a1f74d88fba6af6b05882049d1fdf44372d039aead1c491266c3fe5ef23"),
    "M": (0.10, "1b92262ccb8d7c9fc6cb7328fd1e0922499d2325afba65c2b161556deb7447cf"),
    "H": (0.20, "f3178a60f871ae5c4f423a5a9cc0158206375b568d272c79a30640e3a1737507"),
}
OUT_DIR = Path(__file__).parent


def read_flax_msgpack(data: bytes) -> dict:
    """Nested dict of numpy arrays from flax's msgpack serialisation."""
    import msgpack

    def ext_hook(code: int, payload: bytes):
        if code != 1:
            raise ValueError(f"unsupported flax msgpack extension type {code}")
        shape, dtype, buffer = msgpack.unpackb(payload)
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)

    return msgpack.unpackb(data, ext_hook=ext_hook, raw=False)


def flax_to_state_dict(variables: dict, depth: int = 17) -> dict[str, torch.Tensor]:
    """scico ``DnCNNNet`` variables -> :class:`~deepinv_tunable.nets.DnCNN` state dict."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    blocks = sorted((k for k in params if k.startswith("ConvBNBlock_")), key=lambda k: int(re.sub(r"\D", "", k)))
    if len(blocks) != depth - 2:
        raise ValueError(f"expected {depth - 2} ConvBNBlock entries, found {len(blocks)}")

    def kernel(w: np.ndarray) -> torch.Tensor:  # HWIO -> OIHW
        return torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)))).float()

    state = {"body.0.weight": kernel(params["conv_start"]["kernel"])}
    for i, name in enumerate(blocks):
        conv, bn = 2 + 3 * i, 3 + 3 * i
        bn_params, bn_stats = params[name]["BatchNorm_0"], stats[name]["BatchNorm_0"]
        state[f"body.{conv}.weight"] = kernel(params[name]["Conv_0"]["kernel"])
        state[f"body.{bn}.weight"] = torch.from_numpy(np.array(bn_params["scale"])).float()
        state[f"body.{bn}.bias"] = torch.from_numpy(np.array(bn_params["bias"])).float()
        state[f"body.{bn}.running_mean"] = torch.from_numpy(np.array(bn_stats["mean"])).float()
        state[f"body.{bn}.running_var"] = torch.from_numpy(np.array(bn_stats["var"])).float()
        state[f"body.{bn}.num_batches_tracked"] = torch.tensor(0)
    state[f"body.{2 + 3 * len(blocks)}.weight"] = kernel(params["conv_end"]["kernel"])
    return state


def convert(letter: str, cache: Path) -> DnCNN:
    """The converted 17-layer model ``letter`` (``L``, ``M`` or ``H``)."""
    sigma, sha = MODELS[letter]
    data = read_member(fetch_package(SCICO, cache), f"scico/data/flax/dncnn17{letter}.mpk")
    if sha256_bytes(data) != sha:
        raise ValueError(f"scico/data/flax/dncnn17{letter}.mpk has SHA-256 {sha256_bytes(data)}, expected {sha}")
    net = DnCNN(depth=17, channels=1, num_filters=64, trained_sigma=sigma)
    net.load_state_dict(flax_to_state_dict(read_flax_msgpack(data)))
    return net.eval()


MODEL_CARD = """# dncnn_scico_17{letter}

DnCNN (Zhang et al., IEEE TIP 2017), 17 layers, 64 filters, 3x3, circular padding, no bias,
batch normalisation; residual (predicts the noise). Trained by the scico developers for
Gaussian noise of std **{sigma:g}** on natural images in [0, 1]; blind (one noise level).

- Source: `scico==0.0.7` wheel (PyPI), file `scico/data/flax/dncnn17{letter}.mpk`,
  SHA-256 `{sha}`.
- Licence: BSD-3-Clause (scico; copyright the SCICO developers). Keep this notice with the weights.
- Converted by `python -m deepinv_tunable.pretrained.convert_scico` (HWIO -> OIHW, blocks in
  numerical order, batch-norm statistics from `batch_stats`); checked against scico's own
  `DnCNNNet` output by `tests/test_dncnn.py` (max abs difference below 1e-4 on a 40x40 input).
- Use: `deepinv_tunable.priors.DnCNNDenoiser` (maps any noise level onto the nearest of the L/M/H
  models by scaling the image) inside deepinv's `DPIR` / PnP solvers.
- Limits: trained on natural images, not on medical images; blind models over-smooth below
  their noise level, hence the scaling.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert scico's DnCNN weights to safetensors.")
    parser.add_argument("--cache", default=str(DEFAULT_ROOT / "packages"), help="folder for the scico wheel")
    parser.add_argument("--out", default=str(OUT_DIR), help="parent folder of the dncnn_scico_17* checkpoints")
    args = parser.parse_args(argv)
    for letter, (sigma, sha) in MODELS.items():
        folder = Path(args.out) / f"dncnn_scico_17{letter}"
        convert(letter, Path(args.cache)).save_pretrained(folder)
        (folder / "README.md").write_text(MODEL_CARD.format(letter=letter, sigma=sigma, sha=sha), encoding="utf-8")
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
