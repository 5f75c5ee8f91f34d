r"""The noise-prediction network :math:`\epsilon_\theta(z_t, t)` of latent diffusion: a small
:class:`diffusers.UNet2DModel`, with the noise schedule it was trained for."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from .checkpoint import PretrainedMixin


class LatentUNet(torch.nn.Module, PretrainedMixin):
    r"""Small UNet on latents ``(C, h, w)`` predicting the noise :math:`\epsilon`.

    :param int latent_channels: :math:`C`. Default 8.
    :param int latent_size: :math:`h = w`. Default 16.
    :param tuple block_out_channels: channels per level. Default ``(64, 128)``.
    :param int layers_per_block: ResNet blocks per level. Default 1.
    :param int norm_num_groups: GroupNorm groups. Default 8.
    :param int num_train_timesteps: diffusion length :math:`T`. Default 1000.
    :param str beta_schedule: diffusers schedule name. Default ``"scaled_linear"``.
    :param str vae: the autoencoder whose latents the network was trained on (a shipped name or a
        ``save_pretrained`` folder), recorded so that a solver can load the pair
        (:meth:`~deepinv_tunable.solvers.TunableLDMSolver.from_pretrained`). Default ``None``.

    :Examples:

        >>> net = LatentUNet(latent_channels=2, latent_size=8, block_out_channels=(8, 16))
        >>> net(torch.randn(3, 2, 8, 8), torch.tensor([10, 500, 999])).shape
        torch.Size([3, 2, 8, 8])
    """

    def __init__(
        self,
        latent_channels: int = 8,
        latent_size: int = 16,
        block_out_channels: Sequence[int] = (64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "scaled_linear",
        vae: str | None = None,
    ):
        super().__init__()
        self.config = {
            "latent_channels": int(latent_channels),
            "latent_size": int(latent_size),
            "block_out_channels": [int(c) for c in block_out_channels],
            "layers_per_block": int(layers_per_block),
            "norm_num_groups": int(norm_num_groups),
            "num_train_timesteps": int(num_train_timesteps),
            "beta_schedule": beta_schedule,
            "vae": None if vae is None else str(vae),
        }
        levels = len(block_out_channels)
        self.unet = UNet2DModel(
            sample_size=latent_size,
            in_channels=latent_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=norm_num_groups,
        )

    def forward(self, z_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, device=z_t.device)
        return self.unet(z_t, t.expand(z_t.shape[0]) if t.ndim == 0 else t).sample

    def _schedule(self) -> dict:
        return {
            "num_train_timesteps": self.config["num_train_timesteps"],
            "beta_schedule": self.config["beta_schedule"],
        }

    def training_scheduler(self) -> DDPMScheduler:
        """The forward process used for training."""
        return DDPMScheduler(**self._schedule())

    def sampling_scheduler(self) -> DDIMScheduler:
        """A DDIM scheduler on the same :math:`\\bar\\alpha_t` (the last step lands on :math:`\\bar\\alpha = 1`)."""
        return DDIMScheduler(**self._schedule(), set_alpha_to_one=True, clip_sample=False)
