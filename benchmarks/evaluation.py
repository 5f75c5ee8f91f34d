"""The evaluation loop of the benchmark tables, with what each row measures besides quality:
solver time and memory; and the writing of a run's rows (atomically, after every row)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import deepinv as dinv
import numpy as np
import torch

from deepinv_tunable.data import batched
from deepinv_tunable.physics import from_physics_domain
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .methods import BenchContext

try:  # POSIX only; peak RSS is reported as unavailable elsewhere.
    import resource
except ImportError:  # pragma: no cover
    resource = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA max allocated during evaluation"
    return "process peak RSS so far (high-water mark of the whole run)"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class PeakRSS:
    """Largest increase of the process's resident memory (MiB) while the block runs, polled every
    5 ms in a thread (Linux ``/proc``; ``None`` elsewhere): unlike ``ru_maxrss``, one row's own
    use, not the high-water mark of the whole run."""

    def __enter__(self) -> PeakRSS:
        self.increase_mib: float | None = None
        self._stop = False
        self._base = self._rss()
        self._peak = self._base
        if self._base is not None:
            import threading

            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _rss() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20
        except OSError:
            return None

    def _poll(self) -> None:
        while not self._stop:
            self._peak = max(self._peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop = True
        if self._base is not None:
            self._thread.join()
            self.increase_mib = self._peak - self._base


class NetworkPasses:
    """Counts the slice-passes of the package's networks while active (a batch of ``B`` slices
    through a network counts ``B``): :meth:`HVAE.reconstruct <deepinv_tunable.nets.HVAE.reconstruct>`
    calls, and calls of any ``deepinv.models.Denoiser`` that is not inside another one (a
    wrapper and the network it wraps count once). Benchmark instrumentation, not a product API.
    """

    def __init__(self) -> None:
        self.hvae = 0
        self.denoiser = 0
        self._depth = 0

    @property
    def total(self) -> int:
        """Slice-passes of every counted network."""
        return self.hvae + self.denoiser

    def __enter__(self) -> NetworkPasses:
        from deepinv_tunable.nets import HVAE

        self._hvae_cls, self._original = HVAE, HVAE.reconstruct
        counter = self

        def counted(hvae, x, *args, **kwargs):
            counter.hvae += int(x.shape[0])
            return counter._original(hvae, x, *args, **kwargs)

        HVAE.reconstruct = counted

        def before(module, inputs):
            if isinstance(module, dinv.models.Denoiser):
                if self._depth == 0 and inputs and isinstance(inputs[0], torch.Tensor):
                    self.denoiser += int(inputs[0].shape[0])
                self._depth += 1

        def after(module, inputs, output):
            if isinstance(module, dinv.models.Denoiser):
                self._depth -= 1

        self._hooks = [
            torch.nn.modules.module.register_module_forward_pre_hook(before),
            torch.nn.modules.module.register_module_forward_hook(after),
        ]
        return self

    def __exit__(self, *exc) -> None:
        self._hvae_cls.reconstruct = self._original
        for hook in self._hooks:
            hook.remove()


def hvae_pass_seconds(
    shape: tuple[int, int] = (128, 128), batch: int = 4, repeats: int = 5, device: str = "cpu"
) -> float:
    """Seconds per slice of one forward pass of the shipped ``hvae_mri64`` (``reconstruct`` at
    tau 1) on ``batch`` slices of ``shape`` on ``device``: the unit in which the volume studies
    express every solver's cost, a ratio that holds across machines."""
    from deepinv_tunable import pretrained

    dev = torch.device(device)
    hvae = pretrained.load("hvae_mri64", device=dev).eval()
    x = torch.rand(batch, 1, *shape, device=dev)
    with torch.no_grad():
        hvae.reconstruct(x, 1.0)
        _sync(dev)
        start = time.perf_counter()
        for _ in range(repeats):
            hvae.reconstruct(x, 1.0)
        _sync(dev)
    return (time.perf_counter() - start) / (repeats * batch)


def network_pass_gflop(solver: str, shape: tuple[int, int] = (128, 128)) -> float | None:
    """GFLOP of one slice through the network a volume-study solver runs (counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`): the shipped HVAE for ``pnp_hvae``, the
    default pixel denoiser for ``dpir`` and ``pixel_flash``; ``None`` for a solver without a network."""
    from torch.utils.flop_counter import FlopCounterMode

    from deepinv_tunable import pretrained
    from deepinv_tunable.priors import load_pixel_denoiser

    x = torch.rand(1, 1, *shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if solver == "pnp_hvae":
            pretrained.load("hvae_mri64").eval().reconstruct(x, 1.0)
        elif solver in ("dpir", "pixel_flash"):
            load_pixel_denoiser().eval()(x, 0.05)
        else:
            return None
    return counter.get_total_flops() / 1e9


def gemm_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of an ``n x n`` fp32 matrix product on the current threads (or GPU): the
    attainable peak the volume studies compare their networks' throughput with."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    _sync(dev)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(dev)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def save_row(record: dict[str, Any], row: dict[str, Any], out: str, message: str | None) -> None:
    """Append ``row`` to ``record`` and rewrite ``out`` atomically, so that a crash keeps every
    finished row; then print ``message`` (progress) to stderr unless it is ``None``."""
    record["rows"].append(row)
    write_json_atomic(out, record)
    if message is not None:
        print(message, file=sys.stderr, flush=True)


def finish(record: dict[str, Any], out: str) -> dict[str, Any]:
    """Mark ``record`` complete and write it to ``out`` (atomically)."""
    record["complete"] = True
    write_json_atomic(out, record)
    return record


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def evaluate(
    solver: dinv.models.Reconstructor, ctx: BenchContext, x_eval: torch.Tensor, y_eval: torch.Tensor, batch_size: int
) -> dict[str, Any]:
    """Reconstruct the evaluation slices in batches; time only the solver calls."""
    estimates, seconds = [], 0.0
    reset_peak_memory(ctx.device)
    with torch.no_grad(), PeakRSS() as rss:
        for batch in batched(list(range(len(x_eval))), batch_size):
            y = y_eval[batch]
            _sync(ctx.device)
            start = time.perf_counter()
            x_hat = solver(y, ctx.physics)
            _sync(ctx.device)
            seconds += time.perf_counter() - start
            estimates.append(from_physics_domain(x_hat, ctx.physics).cpu())
    peak = peak_memory_mib(ctx.device)
    metrics = image_metrics(torch.cat(estimates), x_eval)
    return {
        "psnr": _summary(metrics["psnr"]),
        "ssim": _summary(metrics["ssim"]),
        "nmse": _summary(metrics["nmse"]),
        "per_slice": metrics,
        "seconds_per_slice": seconds / len(x_eval),
        "peak_memory_mib": peak,
        "rss_increase_mib": rss.increase_mib,
    }
