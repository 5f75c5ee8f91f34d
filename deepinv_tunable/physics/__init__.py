"""Physics: deepinv operators built from small configs, and what the solvers need to know about
them. One concern per module: :mod:`.factory` (config -> operator), :mod:`.domain` (real image <->
physics domain), :mod:`.measurement` (residuals, baseline, operator norm), :mod:`.noise` (stated
and estimated noise std), :mod:`.validation` (input checks), :mod:`.data_fit` (the measured
count and the reduced chi-square)."""

from .domain import (  # noqa: F401
    from_physics_domain,
    is_complex_mri,
    is_phase_retrieval,
    magnitude,
    physics_device,
    physics_domain_adjoint,
    physics_in_dtype,
    real_image_physics,
    to_physics_domain,
)
from .factory import (  # noqa: F401
    PHYSICS_KINDS,
    BlurConfig,
    CompressedSensingConfig,
    CTConfig,
    DenoisingConfig,
    InpaintingConfig,
    MRIConfig,
    MultiCoilMRIConfig,
    PhaseRetrievalConfig,
    PhysicsConfig,
    batched_mri,
    build_physics,
    mri_mask,
    parse_physics_config,
    physics_rows,
    smooth_coil_maps,
)
from .measurement import (  # noqa: F401
    keeps_what_it_measures,
    measurement_baseline,
    measurement_energy,
    measurement_estimate,
    operator_norm_sq,
    residual_sq,
)
from .noise import (  # noqa: F401
    NOISE_FLOOR,
    estimate_noise_sigma,
    mri_zero_filled_error,
    noise_sigma,
    resolve_sigma,
)
from .validation import (  # noqa: F401
    UNIT_RANGE_RMS_LIMIT,
    check_gaussian_noise,
    check_measurement_shape,
    check_unit_range,
)
