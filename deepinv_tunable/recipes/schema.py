r"""The recipe schema: one YAML file describes one end-to-end job.

Sections: ``data`` (input volume and slicing), ``physics`` (see
:mod:`deepinv_tunable.physics`), ``solver`` (name, parameters, optional tuning grid),
``output`` and the optional ``audit`` (posterior samples, calibration, hallucination audit). Unknown keys, wrong types and missing files each raise one :class:`RecipeError`
naming the key, the value and what was expected.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..data.sample import resolve_input
from ..physics import PhysicsConfig
from ..priors.pixel_denoiser import DEFAULT_PIXEL_DENOISER, DIFFUSION_PIXEL_DENOISER
from ..solvers.classical import DEFAULT_TV_LAMBDA
from ..solvers.flash import DEFAULT_SEVERITY_ENCODER
from ..solvers.pixel_dps import DPS_STEPS, DPS_WEIGHT
from ..solvers.tunable_ldm import DEFAULT_LDM
from .registry import stochastic_solvers


class RecipeError(ValueError):
    """A recipe that cannot be run as written; the message says which key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: former key -> current key (deepinv's names); a former key still works, with a FutureWarning
    RENAMED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)  # the caller's mapping is never modified
        for old, new in cls.RENAMED.items():
            if old in data:
                if new in data:
                    raise ValueError(f"give '{new}' only: '{old}' is its former name")
                warnings.warn(
                    f"recipe key '{old}' is renamed '{new}' (deepinv's name); '{old}' will be removed",
                    FutureWarning,
                    stacklevel=2,
                )
                data[new] = data.pop(old)
        return data


class SliceRange(_Strict):
    """``count`` slices evenly spaced in ``[start, stop)`` (defaults: all slices)."""

    start: int | None = Field(None, ge=0)
    stop: int | None = Field(None, ge=1)
    count: int | None = Field(None, ge=1)


class NormalizeConfig(_Strict):
    lower: float = Field(0.5, ge=0, lt=100)
    upper: float = Field(99.5, gt=0, le=100)


class DataConfig(_Strict):
    input: str = Field(description="NIfTI file, DICOM folder, or 'sample:NAME' for bundled data")
    volume_index: int | None = Field(None, ge=0, description="volume of a 4D NIfTI file (0-based)")
    series: str | None = Field(None, min_length=1, description="SeriesInstanceUID of a DICOM folder's series")
    plane: Literal["axial", "coronal", "sagittal"] = "axial"
    spacing: float | None = Field(None, gt=0, description="in-plane spacing (mm) after resampling")
    size: tuple[int, int] | None = Field(None, description="in-plane (H, W) after centred crop/pad")
    slices: SliceRange = SliceRange()
    normalize: NormalizeConfig = NormalizeConfig()
    batch_size: int = Field(8, ge=1)


class PseudoInverseConfig(_Strict):
    name: Literal["pseudo_inverse"]


class TVPGDParams(_Strict):
    lambda_tv: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description=f"TV weight, or 'auto' (from the measurements); {DEFAULT_TV_LAMBDA} suits 4x MRI at 1% noise",
    )
    RENAMED: ClassVar[dict[str, str]] = {"n_iter": "max_iter"}
    max_iter: int = Field(100, ge=1, description="PGD iterations")
    tv_inner_iter: int = Field(20, ge=1)
    through_slices: bool = Field(False, description="2.5D: TV across consecutive slices of a batch too")
    tol: Annotated[float, Field(gt=0)] | None = Field(
        None, description="stop once the iterate's relative change falls below this (None: max_iter iterations)"
    )
    tune_iter: int | None = Field(
        None, ge=1, description="iterations of each lambda_tv='auto' candidate (None: max_iter)"
    )


class TuneConfig(_Strict):
    """Grid search of ``param`` on calibration slices (with ground truth), which must not
    overlap the evaluation slices."""

    param: str
    grid: list[float] = Field(min_length=1)
    slices: SliceRange
    metric: Literal["psnr", "ssim", "nmse"] = "psnr"


class _TunedSolverConfig(_Strict):
    """A solver section with an optional ``tune`` grid over one of ``TUNABLE`` parameters."""

    TUNABLE: ClassVar[tuple[str, ...]] = ()
    #: the solver's default ``auto_scope`` (``"volume"`` where a choice per batch measured no
    #: better: TV's lambda and PnP-HVAE's tau; see docs/scale.rst)
    AUTO_SCOPE: ClassVar[str] = "batch"
    tune: TuneConfig | None = None
    #: where a parameter the solver chooses from the measurements ("auto") is chosen: per batch
    #: of slices, or once per volume on ``auto_slices`` evaluation slices spread through it;
    #: ``None`` (the default) takes the solver's ``AUTO_SCOPE``
    auto_scope: Literal["batch", "volume"] | None = None
    auto_slices: int = Field(3, ge=1, description="slices of a once-per-volume choice")
    warm_start: bool = Field(
        False,
        description="start each slice from the reconstruction of the evaluation slice before it "
        "(deepinv_tunable.recipes.warm_start); solvers that take x_init only",
    )

    @model_validator(mode="after")
    def _tuned_param_exists(self):
        if self.auto_scope is None:
            self.auto_scope = self.AUTO_SCOPE
        if self.tune is not None and self.tune.param not in self.TUNABLE:
            raise ValueError(
                f"tune.param '{self.tune.param}' is not a tunable {self.name} parameter; expected one of "
                f"{sorted(self.TUNABLE)}"
            )
        if self.warm_start and getattr(getattr(self, "params", None), "through_slices", False):
            raise ValueError(
                "warm_start and params.through_slices cannot be combined: a warm start's batches hold one "
                "slice of each chain, not consecutive slices"
            )
        return self


class TVPGDConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = tuple(TVPGDParams.model_fields)
    AUTO_SCOPE: ClassVar[str] = "volume"
    name: Literal["tv_pgd"]
    params: TVPGDParams = TVPGDParams()


class _LatentMAPCommon(_Strict):
    model: str = "tunable_vae_mri128"
    RENAMED: ClassVar[dict[str, str]] = {"n_steps": "max_iter"}
    gamma: float = Field(1.0, ge=0)
    max_iter: int = Field(150, ge=1, description="Adam steps on the latent")
    lr: float = Field(0.05, gt=0)
    restarts: int = Field(1, ge=1)


class LatentMAPParams(_LatentMAPCommon):
    """Latent MAP with a shipped tunable prior; ``k``: an integer, ``"auto"`` (chosen per slice
    from the measurements by ``k_rule`` over ``k_grid``) or ``"full"``. ``k_rule``: ``"auto"``
    (:func:`~deepinv_tunable.tuning.latent_size.default_k_rule`: splitting on CT, SURE in denoising, the
    discrepancy principle elsewhere), ``"splitting"``, ``"discrepancy"``, ``"sure"`` or
    ``"closed_form"`` (from the noise level and the model's shipped spectrum, no sweep). For a ground-truth sweep on calibration slices, use
    ``tune: {param: k, grid: [...], slices: ...}``."""

    k: int | Literal["auto", "full"] = "full"
    k_grid: list[int] = Field([64, 128, 256, 512, 1024, 2048], min_length=1)
    k_rule: Literal["auto", "splitting", "discrepancy", "sure", "closed_form"] = "auto"


class LatentMAPConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("k", "gamma")
    name: Literal["latent_map"]
    params: LatentMAPParams = LatentMAPParams()


class LatentMAPTVParams(_LatentMAPCommon):
    """LatentMAP at a fixed ``k`` plus a TV-regularised deviation from its image
    (:class:`~deepinv_tunable.solvers.LatentMAPTV`): ``lambda_tv`` the TV weight of the deviation,
    ``beta`` the weight of the generator's image (0: plain TV), ``tv_max_iter`` the PGD iterations."""

    RENAMED: ClassVar[dict[str, str]] = {"n_steps": "max_iter", "tv_iter": "tv_max_iter"}

    k: int | Literal["full"] = "full"
    lambda_tv: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"
    beta: Annotated[float, Field(ge=0, le=1)] | Literal["auto"] = 1.0
    tv_max_iter: int = Field(100, ge=1)


class LatentMAPTVConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("k", "gamma", "lambda_tv", "beta")
    name: Literal["latent_map_tv"]
    params: LatentMAPTVParams = LatentMAPTVParams()


class TunableLDMParams(_Strict):
    """Tunable latent diffusion; ``unet`` and ``vae`` are shipped names or folders written by
    ``save_pretrained`` (e.g. ``results/train_tunable_ldm/model``): by default the shipped LDM and
    the autoencoder its config records; ``consistency`` picks the data-consistency step, ``zeta``
    DiffPIR's transition (``null``: DDIM with ``eta``)."""

    unet: str = DEFAULT_LDM
    vae: str | None = None
    RENAMED: ClassVar[dict[str, str]] = {"n_steps": "max_iter"}
    k: int | Literal["full"] = "full"
    max_iter: int = Field(50, ge=1, description="DDIM steps")
    eta: float = Field(0.1, gt=0, le=1)
    zeta: float | None = Field(1.0, ge=0, le=1)
    consistency: Literal["local_map", "adam_dc", "ldps", "psld", "dds"] = "local_map"
    seed: int = 0


class TunableLDMConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("k", "eta")
    name: Literal["tunable_ldm"]
    params: TunableLDMParams


class PnPHVAEParams(_Strict):
    """PnP-HVAE with a shipped hierarchical VAE (or a ``save_pretrained`` folder); ``tau``
    ``"auto"`` is chosen from the measurements (:mod:`deepinv_tunable.tuning`), ``"noise"``
    follows the noise level (:func:`~deepinv_tunable.priors.tau_for_sigma`). ``schedule``: the
    fixed-point iteration, DPIR's annealed continuation, or ``"auto"`` (annealed for CT and
    blur when ``tau`` is ``"auto"``; :func:`~deepinv_tunable.solvers.pnp_hvae.resolve_schedule`),
    ``anneal_iter`` and ``anneal_sigma`` the annealed schedule's iterations and final level."""

    model: str = "hvae_mri64"
    tau: float | Literal["auto", "noise"] = "auto"
    gamma: float | None = Field(None, gt=0)
    max_iter: int = Field(50, ge=1)
    tol: float = Field(1e-4, ge=0)
    schedule: Literal["auto", "fixed", "anneal"] = "auto"
    anneal_iter: int = Field(8, ge=2)
    anneal_sigma: Annotated[float, Field(gt=0)] | Literal["noise", "auto"] = "noise"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32", description="the HVAE's (deepinv_tunable.utils.precision)"
    )


class PnPHVAEConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("tau", "gamma", "anneal_sigma")
    AUTO_SCOPE: ClassVar[str] = "volume"
    name: Literal["pnp_hvae"]
    params: PnPHVAEParams = PnPHVAEParams()


class FlashDiffusionParams(_Strict):
    """Flash-Diffusion from a severity-encoder checkpoint (shipped name or ``save_pretrained``
    folder; it records its VAE and UNet; default the f4c12 set). ``start``: ``"snr"`` (adaptive),
    ``"noise"`` (the whole schedule) or a fixed number of steps; ``consistency`` the data step
    (the paper's LDPS, step ``eta``, with ``zeta: null``)."""

    model: str = DEFAULT_SEVERITY_ENCODER
    RENAMED: ClassVar[dict[str, str]] = {"n_steps": "max_iter"}
    max_iter: int = Field(50, ge=1, description="length of the full DDIM schedule")
    start: int | Literal["snr", "noise"] = "snr"
    eta: float = Field(1.5, ge=0, description="LDPS step (consistency: ldps)")
    ddim_eta: float = Field(0.1, ge=0, le=1)
    zeta: float | None = Field(1.0, ge=0, le=1)
    consistency: Literal["local_map", "adam_dc", "ldps", "psld", "dds"] = "local_map"
    noise_correction: float = Field(1.0, ge=0)
    k: int | Literal["full"] = "full"
    seed: int = 0


class FlashDiffusionConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("noise_correction", "eta", "k")
    name: Literal["flash_diffusion"]
    params: FlashDiffusionParams = FlashDiffusionParams()


class PixelFlashParams(_Strict):
    """:class:`~deepinv_tunable.solvers.PixelFlash`: deepinv's DiffPIR started at each slice's
    severity. ``denoiser``: ``"dncnn-corpus"``, ``"dncnn-scico"`` or a pixel-denoiser checkpoint
    (:func:`~deepinv_tunable.priors.load_pixel_denoiser`); ``start``: ``"severity"`` or ``"noise"``."""

    denoiser: str = DEFAULT_PIXEL_DENOISER
    max_iter: int = Field(50, ge=2)
    lambda_: float = Field(1.0, gt=0, description="DiffPIR's data weight")
    zeta: float = Field(1.0, ge=0, le=1)
    start: Literal["severity", "noise"] = "severity"
    severity: Literal["auto", "spectrum", "pilot"] = "auto"
    noise_correction: float | None = Field(None, gt=0, description="start constant c; None: the severity rule's")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="the denoiser's (deepinv_tunable.utils.precision)"
    )


class PixelFlashConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("lambda_", "noise_correction")
    name: Literal["pixel_flash"]
    params: PixelFlashParams = PixelFlashParams()


class DPIRParams(_Strict):
    """:class:`~deepinv_tunable.solvers.DPIR`, the plug-and-play anchor: ``denoiser`` by name
    (:func:`~deepinv_tunable.priors.load_pixel_denoiser`), ``sigma`` its final level, ``"noise"``
    (the measurement noise std, the default) or ``"auto"`` (searched from the measurements)."""

    denoiser: str = DEFAULT_PIXEL_DENOISER
    sigma: Annotated[float, Field(gt=0)] | Literal["noise", "auto"] = "noise"
    max_iter: int = Field(8, ge=2, description="HQS iterations (deepinv's DPIR: 8)")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="the denoiser's (deepinv_tunable.utils.precision)"
    )


class DPIRConfig(_TunedSolverConfig):
    TUNABLE: ClassVar[tuple[str, ...]] = ("sigma", "max_iter")
    name: Literal["dpir"]
    params: DPIRParams = DPIRParams()


SolverConfig = Annotated[
    PseudoInverseConfig
    | TVPGDConfig
    | LatentMAPConfig
    | LatentMAPTVConfig
    | TunableLDMConfig
    | PnPHVAEConfig
    | FlashDiffusionConfig
    | PixelFlashConfig
    | DPIRConfig,
    Field(discriminator="name"),
]


class PnPHVAESamplerParams(_Strict):
    """:class:`~deepinv_tunable.solvers.PnPHVAESampler` warm-started at the recipe's reconstruction."""

    model: str = "hvae_mri64"
    tau: float = Field(0.9, gt=0, le=1)
    RENAMED: ClassVar[dict[str, str]] = {"n_iter": "max_iter"}
    max_iter: int = Field(5, ge=1, description="Gibbs steps per sample after the warm start")


class PixelDPSParams(_Strict):
    """:class:`~deepinv_tunable.solvers.PixelDPS`: deepinv's DPS configured for the diffusion
    pixel prior, each sample drawn from pure noise (no warm start)."""

    denoiser: str = Field(DIFFUSION_PIXEL_DENOISER, description="shipped pixel denoiser name or save_pretrained folder")
    num_steps: int = Field(DPS_STEPS, ge=1)
    weight: float = Field(DPS_WEIGHT, gt=0)


#: the audit samplers and the parameters each takes (``solver`` takes none: the recipe's own)
AUDIT_SAMPLER_PARAMS: dict[str, type[_Strict]] = {
    "pnp_hvae_sampler": PnPHVAESamplerParams,
    "pixel_dps": PixelDPSParams,
}


class AuditConfig(_Strict):
    """Posterior sampling, calibrated intervals and the hallucination audit
    (``deepinv-tunable audit``). ``sampler``: ``pnp_hvae_sampler`` (Gibbs sampling with a
    hierarchical VAE, warm-started at the reconstruction), ``pixel_dps`` (deepinv's DPS with the
    diffusion pixel prior, :class:`~deepinv_tunable.solvers.PixelDPS`) or ``solver`` (the
    recipe's own solver, when it is stochastic, e.g. ``tunable_ldm``); ``sampler_params`` are
    the chosen sampler's (:class:`PnPHVAESamplerParams`, :class:`PixelDPSParams`). ``calibration``: slices with ground truth,
    disjoint from the evaluation slices, for split-conformal calibration; or ``calibration_file``,
    a ``calibration.json`` written by an earlier audit. Without either, intervals are uncalibrated."""

    samples: int = Field(16, ge=2)
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    sampler: Literal["pnp_hvae_sampler", "pixel_dps", "solver"] = "pnp_hvae_sampler"
    sampler_params: PnPHVAESamplerParams | PixelDPSParams = PnPHVAESamplerParams()
    alpha: float = Field(0.1, gt=0, lt=1)
    calibration: SliceRange | None = None
    calibration_file: str | None = None
    head_threshold: float = Field(0.05, ge=0, lt=1, description="normalised intensity above which a pixel is scored")

    @model_validator(mode="before")
    @classmethod
    def _params_of_the_sampler(cls, data: Any) -> Any:
        """``sampler_params`` validated as the chosen sampler's (unknown keys name the sampler)."""
        if not isinstance(data, dict):
            return data
        sampler = data.get("sampler", "pnp_hvae_sampler")
        params = data.get("sampler_params")
        kind = AUDIT_SAMPLER_PARAMS.get(sampler)
        if kind is not None and (params is None or isinstance(params, dict)):
            try:
                data = {**data, "sampler_params": kind(**(params or {}))}
            except ValidationError as err:
                raise ValueError(
                    f"sampler_params of sampler '{sampler}': {err.errors()[0]['msg']} "
                    f"({'.'.join(map(str, err.errors()[0]['loc']))}); it takes {sorted(kind.model_fields)}"
                ) from None
        return data

    @model_validator(mode="after")
    def _one_calibration_source(self):
        if self.calibration is not None and self.calibration_file is not None:
            raise ValueError("give either calibration (slices) or calibration_file, not both")
        return self


class OutputConfig(_Strict):
    dir: str = "results"
    figures: int = Field(4, ge=0, description="number of slices shown in PNG figures")
    volumes: bool = True
    report: bool = True
    compare: list[SolverConfig] = Field(
        [],
        description="further solvers run on the same measurements, for the metrics table (e.g. "
        "[{name: tv_pgd}]: TV with lambda chosen from the measurements)",
    )


class Recipe(_Strict):
    name: str
    description: str = ""
    data: DataConfig
    physics: PhysicsConfig
    solver: SolverConfig
    output: OutputConfig = OutputConfig()
    audit: AuditConfig | None = None
    seed: int = Field(0, description="seeds the simulated measurement noise (per slice) and stochastic solvers")
    device: Literal["cpu", "cuda"] = "cpu"

    @model_validator(mode="after")
    def _audit_sampler_is_stochastic(self):
        if self.audit is not None and self.audit.sampler == "solver" and self.solver.name not in stochastic_solvers():
            raise ValueError(
                f"audit.sampler 'solver' needs a stochastic solver ({', '.join(stochastic_solvers())}); "
                f"'{self.solver.name}' is deterministic: use audit.sampler: pnp_hvae_sampler or pixel_dps"
            )
        return self

    def input_path(self) -> Path:
        return resolve_input(self.data.input)


def format_errors(err: ValidationError, source: str, section: str = "") -> str:
    """One line per problem of a pydantic validation error: the dotted key (below ``section``
    when the model validated one section), what is wrong and the value given (run and training
    recipes alike)."""
    lines = []
    for e in err.errors():
        key = ".".join([section, *(str(p) for p in e["loc"])] if section else [str(p) for p in e["loc"]])
        key = key or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/recipes.rst for the valid keys)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return f"invalid recipe {source}:\n" + "\n".join(lines)


def parse_recipe(raw: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Validate a recipe given as a dict; raise :class:`RecipeError` listing every problem."""
    if not isinstance(raw, dict):
        raise RecipeError(f"invalid recipe {source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(format_errors(err, source)) from None
