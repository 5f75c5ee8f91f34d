"""Training presets: ``cpu-small`` (demos, tests, the shipped checkpoints; minutes on 2 CPU
cores) and ``gpu`` (full size, mixed precision, DDP-ready). A recipe names a preset and may
override any of its keys."""

from __future__ import annotations

from typing import Any

#: severities the severity encoder is trained over, in both presets (Flash-Diffusion's severity encoder)
SEVERITY_RANGES = {
    "kinds": ["mri", "ct", "blur"],
    "mri_acceleration": [2, 12],
    "ct_views": [20, 180],
    "blur_sigma": [0, 3],
    "noise_sigma": [0, 0.03],
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tunable_vae": {
        "cpu-small": {
            "module": {
                "vae": {"block_out_channels": [16, 32, 64, 64], "latent_channels": 8},
                "lr": 1e-3,
                "beta": 1e-3,
                "k_p": 2e-3,
            },
            "data": {"batch_size": 8, "samples_per_epoch": 512, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 1000,
                "max_time_minutes": 19.0,
            },
        },
        "gpu": {
            "module": {
                "vae": {
                    "block_out_channels": [64, 128, 256, 256],
                    "latent_channels": 8,
                    "layers_per_block": 2,
                    "norm_num_groups": 32,
                },
                "lr": 2e-4,
                "beta": 1e-3,
                "k_p": 2e-3,
                "ssim_weight": 0.2,
            },
            "data": {"batch_size": 32, "samples_per_epoch": 8192, "num_workers": 8},
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "max_epochs": 200,
                "max_time_minutes": None,
            },
        },
    },
    "tunable_ldm": {
        "cpu-small": {
            "module": {
                "vae": "tunable_vae_mri128",
                "unet": {"block_out_channels": [64, 128]},
                "a": 0.5,
                "lr": 5e-4,
                "k_p": 2e-3,
            },
            "data": {"batch_size": 16, "samples_per_epoch": 512, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 1000,
                "max_time_minutes": 19.0,
            },
        },
        "gpu": {
            "module": {
                "vae": "tunable_vae_mri128",
                "unet": {"block_out_channels": [128, 256, 256], "layers_per_block": 2, "norm_num_groups": 32},
                "a": 0.5,
                "lr": 1e-4,
                "k_p": 2e-3,
            },
            "data": {"batch_size": 64, "samples_per_epoch": 16384, "num_workers": 8},
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "max_epochs": 500,
                "max_time_minutes": None,
            },
        },
    },
    "ordered_flow": {
        "cpu-small": {
            "module": {
                "flow": {"levels": 3, "couplings_per_level": 4, "hidden": 32},
                "rec_weight": 10.0,
                "lr": 1e-3,
                "k_p": 1e-3,
            },
            "data": {"batch_size": 8, "samples_per_epoch": 512, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 1000,
                "max_time_minutes": 19.0,
            },
        },
        "gpu": {
            "module": {
                "flow": {"levels": 4, "couplings_per_level": 8, "hidden": 128},
                "rec_weight": 10.0,
                "lr": 5e-4,
                "k_p": 1e-3,
            },
            "data": {"batch_size": 32, "samples_per_epoch": 8192, "num_workers": 8},
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 200,
                "max_time_minutes": None,
            },
        },
    },
    "hvae": {
        "cpu-small": {
            "module": {
                "hvae": {"width": 32, "z_channels": 4, "groups_per_scale": [2, 2, 1, 1], "gamma": 0.02},
                "lr": 2e-3,
                "ema_decay": 0.998,
            },
            "data": {"batch_size": 8, "patch_size": 64, "samples_per_epoch": 512, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 1000,
                "max_time_minutes": 28.0,
            },
        },
        "gpu": {
            "module": {
                "hvae": {
                    "width": 128,
                    "z_channels": 8,
                    "groups_per_scale": [2, 3, 4, 4, 3],
                    "blocks_per_scale": 2,
                    "gamma": 0.02,
                },
                "lr": 1e-3,
                "ema_decay": 0.9995,
            },
            # batch 64 ran 5 steps/s on an H200 (11 TFLOP/s of 35 GFLOP per patch: per-step
            # overhead, not arithmetic, bounds it), so a larger batch costs little time per step
            "data": {"batch_size": 128, "patch_size": 64, "samples_per_epoch": 32768, "num_workers": 8},
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "max_epochs": 300,
                "max_time_minutes": None,
            },
        },
    },
    "dncnn": {
        "cpu-small": {
            "module": {"init": "dncnn_scico_17M", "lr": 1e-4},
            "data": {"input": "corpus", "batch_size": 16, "patch_size": 48, "samples_per_epoch": 512, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 1000,
                "max_time_minutes": 10.0,
            },
        },
        "gpu": {
            "module": {"init": "dncnn_scico_17M", "lr": 1e-4},
            "data": {
                "input": "corpus",
                "batch_size": 128,
                "patch_size": 64,
                "samples_per_epoch": 32768,
                "num_workers": 8,
            },
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 20,
                "max_time_minutes": 2.0,
            },
        },
    },
    "drunet": {
        "cpu-small": {
            "module": {
                "drunet": {"nc": [32, 64, 128, 256], "nb": 2},
                "sigma_range": [0.002, 80.0],
                "sigma_knee": 1.0,
                "high_share": 0.15,
                "lr": 2e-4,
                "ema_decay": 0.999,
                # bf16 autocast + channels-last: 50 patches/s against 24 in fp32 on one Zen 5
                # thread (benchmarks/training_throughput.py)
                "channels_last": True,
            },
            "data": {"input": "corpus", "batch_size": 8, "patch_size": 64, "samples_per_epoch": 4096, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "max_epochs": 10000,
                "max_time_minutes": 20.0,
            },
        },
        "gpu": {
            "module": {
                "drunet": {"nc": [64, 128, 256, 512], "nb": 4},
                "sigma_range": [0.002, 80.0],
                "lr": 1e-4,
                "ema_decay": 0.9995,
            },
            "data": {
                "input": "corpus",
                "batch_size": 32,
                "patch_size": 96,
                "samples_per_epoch": 16384,
                "num_workers": 8,
            },
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "max_epochs": 60,
                "max_time_minutes": None,
            },
        },
    },
    "severity_encoder": {
        "cpu-small": {
            "module": {
                "vae": "tunable_vae_mri128",
                "unet": "tunable_ldm_mri128",
                "lambda_sigma": 10.0,
                "lambda_im": 0.0,
                "lr": 3e-4,
                "degradations": SEVERITY_RANGES,
            },
            "data": {"batch_size": 8, "samples_per_epoch": 512, "num_workers": 1},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",
                "max_epochs": 1000,
                "max_time_minutes": 15.0,
                # without it a corpus run diverged at update ~350 (latent loss 0.3 -> 60, still 1.4 after 4000)
                "gradient_clip_val": 1.0,
            },
        },
        "gpu": {
            "module": {
                "vae": "tunable_vae_mri128",
                "unet": "tunable_ldm_mri128",
                "lambda_sigma": 10.0,
                "lambda_im": 0.1,
                "lr": 1e-4,
                "degradations": SEVERITY_RANGES,
            },
            "data": {"batch_size": 64, "samples_per_epoch": 16384, "num_workers": 8},
            "trainer": {
                "accelerator": "gpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "max_epochs": 100,
                "max_time_minutes": None,
                "gradient_clip_val": 1.0,
            },
        },
    },
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins; nested dicts are merged, not replaced.

    >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
    """
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
