"""The one table of benchmark tasks: every named inverse problem a study runs, and which of them
each study runs, under which row label.

:data:`TASKS` maps a task's name to its physics config (``deepinv_tunable.physics.build_physics``).
A name says its setting: two settings of one kind are two entries (``deblur1.5``: Gaussian blur
of std 1.5 px, ``deblur2.0``: std 2 px), never one name with two meanings.

A study picks its tasks with :func:`study_tasks`, which gives ``row label -> physics config``.
The label is the task's name, except where a study's rows have always carried an older label:
the bundled-volume studies and the reserved-subject studies both label their deblurring rows
``deblur`` (result files, ``--tasks`` choices and documented commands keep it), and the table
below says which setting each of them means. Studies that sweep a level (``k_study``'s noise,
acceleration and views, ``flash``'s mixed accelerations, ``volume``'s one MRI config) build those
configs themselves.
"""

from __future__ import annotations

from typing import Any

#: task name -> physics config (noise std on images in [0, 1])
TASKS: dict[str, dict[str, Any]] = {
    # single-coil Cartesian MRI, Gaussian mask
    "mri4x": {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01},
    "mri8x": {"kind": "mri", "acceleration": 8, "noise_sigma": 0.01},
    # 60 parallel-beam views
    "ct60": {"kind": "ct", "n_views": 60, "noise_sigma": 0.01},
    # Gaussian blur, std in px
    "deblur1.5": {"kind": "blur", "blur_sigma": 1.5, "noise_sigma": 0.01},
    "deblur2.0": {"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01},
    # keep 50 % of the pixels
    "inpaint50": {"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.01},
    # plain denoising (the pixel prior against the DnCNN family as a denoiser)
    "denoise0.02": {"kind": "denoising", "noise_sigma": 0.02},
    "denoise0.05": {"kind": "denoising", "noise_sigma": 0.05},
    # Gaussian compressed sensing, 10 % of the measurements
    "cs10": {"kind": "compressed_sensing", "sampling_ratio": 0.1, "noise_sigma": 0.05},
}


def study_tasks(*entries: str | tuple[str, str]) -> dict[str, dict[str, Any]]:
    """A study's tasks, in order: row label -> a copy of the physics config of :data:`TASKS`.

    :param entries: task names (each its own label), or ``(label, task name)`` pairs where a
        study labels a task otherwise.
    """
    table: dict[str, dict[str, Any]] = {}
    for entry in entries:
        label, name = (entry, entry) if isinstance(entry, str) else entry
        if label in table:
            raise ValueError(f"task label {label!r} is given twice")
        table[label] = dict(TASKS[name])
    return table


#: The bundled volumes' method x task tables (``common.run``: ``baselines``, ``table``; also
#: ``common.TASKS``): their ``deblur`` is ``deblur1.5``. (``slab_tv``, ``uncertainty`` and
#: ``inference_precision`` read ``TASKS["mri4x"]`` directly.)
BUNDLED_TASKS = study_tasks("mri4x", "mri8x", "ct60", ("deblur", "deblur1.5"), "inpaint50")
#: ``table``'s default ``--tasks`` (labels of :data:`BUNDLED_TASKS`)
TABLE_TASKS = ("mri4x", "mri8x", "deblur")
#: ``pnp_hvae``: the bundled tasks PnP-HVAE is measured on
PNP_HVAE_TASKS = study_tasks("mri4x", "mri8x", ("deblur", "deblur1.5"), "inpaint50")
#: ``tunable``: the tunable latent prior on held-out slices
TUNABLE_TASKS = study_tasks("mri4x", "mri8x", "cs10")
#: ``ldm``: the tunable latent diffusion's consistency steps
LDM_TASKS = study_tasks("mri4x", "mri8x")

#: The corpus' reserved subjects (``reserved``, and the studies on its protocol: ``autotune``,
#: ``flash_nfe``, ``tau_holdout``, ``tune_cost``, ``pnp_hvae_knobs``): their ``deblur`` is
#: ``deblur2.0``.
RESERVED_TASKS = study_tasks("mri4x", "mri8x", "ct60", ("deblur", "deblur2.0"), "denoise0.02", "denoise0.05")
#: the labels of :data:`RESERVED_TASKS` run on each modality of the reserved subjects
RESERVED_TASKS_OF: dict[str, tuple[str, ...]] = {
    "mr": ("mri4x", "mri8x", "deblur", "denoise0.02", "denoise0.05"),
    "ct": ("ct60",),
}
