"""Where a GPU training step's time goes, before spending the device budget on training:
the data loader alone, the model's step alone (a fixed batch, the preset's precision), and the
step with the loader's batch copied in. Prints patches per second for each.

    python recipes/device/profile_step.py hvae --batches 100
"""

from __future__ import annotations

import argparse
import time

import torch

from deepinv_tunable.training.data import SliceDataConfig, SliceDataModule
from deepinv_tunable.training.hvae import HVAEModule
from deepinv_tunable.training.presets import PRESETS


def rate(label: str, patches: int, seconds: float) -> None:
    print(f"{label}: {patches / seconds:.0f} patches/s ({seconds:.2f} s for {patches})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=["hvae"])
    parser.add_argument(
        "--batches",
        type=int,
        default=100,
        help="loader batches timed (the workers prefetch 2 each: time well past that)",
    )
    parser.add_argument("--steps", type=int, default=30, help="model steps timed")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    preset = PRESETS[args.model]["gpu"]
    batch = args.batch_size or preset["data"]["batch_size"]
    device = "cuda" if torch.cuda.is_available() else "cpu"

    data = SliceDataModule(
        SliceDataConfig(
            input="corpus",
            patch_size=preset["data"]["patch_size"],
            batch_size=batch,
            num_workers=args.workers,
            samples_per_epoch=batch * (args.batches + 2),
            geometric_augment=False,
        )
    )
    data.setup("fit")
    loader = iter(data.train_dataloader())
    next(loader)  # workers started
    start = time.perf_counter()
    batches = [next(loader) for _ in range(args.batches)]
    rate("data loader alone", batch * args.batches, time.perf_counter() - start)

    module = HVAEModule(**preset["module"]).to(device)
    configured = module.configure_optimizers()  # the module's own optimizer, with or without its ramp
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    fixed = batches[0].to(device)

    def step(x: torch.Tensor) -> None:
        with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            loss, _ = module.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.hvae.parameters(), module.hparams.grad_clip)
        optimizer.step()

    for _ in range(3):
        step(fixed)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(fixed)
    if device == "cuda":
        torch.cuda.synchronize()
    rate("model step alone (fixed batch)", batch * args.steps, time.perf_counter() - start)
    start = time.perf_counter()
    for x in batches[: args.steps]:
        step(x.to(device, non_blocking=True))
    if device == "cuda":
        torch.cuda.synchronize()
    rate("model step with copied batches", batch * min(args.steps, len(batches)), time.perf_counter() - start)


if __name__ == "__main__":
    main()
