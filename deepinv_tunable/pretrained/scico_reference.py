r"""Write scico's own DnCNN outputs on a fixed input, to check the converted weights against.

Standalone on purpose: it runs in an environment with ``scico==0.0.7``, jax, flax and
safetensors, and imports nothing from this package (which needs torch)::

    python deepinv_tunable/pretrained/scico_reference.py tests/data/scico_dncnn_reference.safetensors
"""

import sys
from pathlib import Path

import numpy as np


def write_reference(path, letters="LMH"):
    """Run scico's own ``DnCNNNet`` on a fixed input and store input and outputs (safetensors,
    numpy only), for the conversion test. Needs ``scico``, ``jax`` and ``flax``; no torch."""
    import jax.numpy as jnp
    import scico
    from safetensors.numpy import save_file
    from scico.flax import DnCNNNet, load_variables

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    clean = (0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.2 * (xx > 0.5)).astype(np.float32)
    out = {"input": clean + 0.08 * rng.standard_normal(clean.shape).astype(np.float32)}
    root = Path(scico.__file__).parent / "data" / "flax"
    for letter in letters:
        model = DnCNNNet(depth=17, channels=1, num_filters=64)
        variables = load_variables(str(root / f"dncnn17{letter}.mpk"))
        y = model.apply(variables, jnp.asarray(out["input"])[None, :, :, None], train=False, mutable=False)
        out[f"output_{letter}"] = np.asarray(y)[0, :, :, 0].astype(np.float32)
    save_file(out, str(path))


if __name__ == "__main__":
    write_reference(sys.argv[1])
