import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from deepinv_tunable import pretrained
from deepinv_tunable.nets import TunableVAE
from deepinv_tunable.recipes import RecipeError
from deepinv_tunable.training import load_train_recipe, train
from deepinv_tunable.training.model_card import read_metrics_csv

REPO = Path(__file__).resolve().parents[1]


def tiny_train_recipe(tmp_path, **trainer):
    """A 32x32 tiny VAE on axial slices of the bundled subject: 4 steps per epoch."""
    recipe = {
        "name": "tiny_vae",
        "model": "tunable_vae",
        "preset": "cpu-small",
        "data": {
            "input": "sample:itk_t1",
            "spacing": 8.0,
            "size": [32, 32],
            "holdout": [60, 70],
            "batch_size": 4,
            "samples_per_epoch": 16,
            "num_workers": 0,
            "val_slices": 2,
        },
        "module": {"vae": {"block_out_channels": [8, 8], "latent_channels": 2}},
        "trainer": {"max_epochs": 2, "max_time_minutes": None, "log_every_n_steps": 1, **trainer},
        "output": str(tmp_path / "run"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


class Crash(L.Callback):
    """Simulates a crash in the middle of the second epoch."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_loses_no_finished_epoch(tmp_path):
    recipe = load_train_recipe(tiny_train_recipe(tmp_path))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(recipe, progress=False, callbacks=[Crash()])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and state["global_step"] == 4  # epoch 0 finished and saved
    result = train(recipe, progress=False)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 8  # resumed: 4 more steps, not 8
    vae = TunableVAE.from_pretrained(result.model_dir)
    assert vae.latent_dim == 2 * 16 * 16 and vae.config["scaling_factor"] > 0
    card = (result.model_dir / "README.md").read_text()
    assert "8 optimiser steps" in card and "held out" in card and (result.model_dir / "loss_curve.png").is_file()
    # the interrupted run's log survives the resumption, which logs beside it
    logs = [tmp_path / "run" / "logs" / f"version_{v}" / "metrics.csv" for v in (0, 1)]
    before, after = read_metrics_csv(logs[0]), read_metrics_csv(logs[1])
    assert {r["step"] for r in before if "train/loss_step" in r} >= {0, 1, 2, 3}
    assert {r["step"] for r in after if "train/loss_step" in r} >= {4, 5, 6, 7}
    assert any("val/psnr_k512" in r for r in after)


def test_linear_path_vae_fits_its_patch_code_on_the_training_images_and_keeps_it(tmp_path):
    path = tiny_train_recipe(tmp_path, max_epochs=1)
    vae_config = {"block_out_channels": [8], "space_to_depth": 2, "latent_channels": 3, "linear_path": True}
    recipe = load_train_recipe(path, {"module": {"vae": vae_config}})
    result = train(recipe, progress=False)
    vae = TunableVAE.from_pretrained(result.model_dir)
    assert vae.patch_code.fitted and vae.latent_shape == (3, 16, 16)
    # whitened components: unit variance per channel on the images the code was fitted to
    from deepinv_tunable.training.data import SliceDataModule

    dm = SliceDataModule(recipe.data)
    dm.setup()
    z = vae.patch_code.encode(dm.train_images())
    assert torch.allclose(z.transpose(0, 1).flatten(1).var(1), torch.ones(3), rtol=0.05)
    # a run started from that model keeps its code rather than refitting it to its (here other) images
    other = {"module": {"vae": vae_config, "init": str(result.model_dir)}, "data": {"holdout": [30, 60]}}
    recipe = load_train_recipe(path, {**other, "output": str(tmp_path / "continued")})
    again = TunableVAE.from_pretrained(train(recipe, progress=False).model_dir)
    assert torch.equal(again.patch_code.analysis, vae.patch_code.analysis)


def test_training_lowers_the_loss(tmp_path):
    recipe = load_train_recipe(tiny_train_recipe(tmp_path, max_epochs=6), {"module": {"lr": 3e-3}})
    train(recipe, progress=False)
    rows = read_metrics_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    losses = [r["train/loss_epoch"] for r in rows if "train/loss_epoch" in r]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses


def test_bad_training_recipes(tmp_path):
    path = tiny_train_recipe(tmp_path)
    with pytest.raises(RecipeError, match=r"  model: Input should be 'tunable_vae'"):
        load_train_recipe(path, {"model": "gan"})
    with pytest.raises(RecipeError, match=r"  data.batch_sise: unknown key"):
        train(load_train_recipe(path, {"data": {"batch_sise": 3}}), progress=False)
    with pytest.raises(ValueError, match=r"holdout slab \[500, 600\) is empty or outside \[0, 128\)"):
        train(load_train_recipe(path, {"data": {"holdout": [500, 600]}}), progress=False)


class ClipProbe(L.Callback):
    """Records the Trainer's gradient clipping and stops after the first update."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clip = trainer.gradient_clip_val  # by norm: Lightning's default algorithm
        trainer.should_stop = True


def test_gradient_clipping_reaches_the_trainer_and_the_severity_preset_sets_it(tmp_path):
    from deepinv_tunable.training.run import resolve

    probe = ClipProbe()
    train(load_train_recipe(tiny_train_recipe(tmp_path, gradient_clip_val=0.5)), progress=False, callbacks=[probe])
    assert probe.clip == 0.5
    _, _, tcfg = resolve(load_train_recipe(REPO / "recipes" / "train_severity_encoder_corpus.yaml"))
    assert tcfg.gradient_clip_val == 1.0
    with pytest.raises(RecipeError, match=r"trainer.gradient_clip_val: Input should be greater than 0"):
        train(load_train_recipe(tiny_train_recipe(tmp_path, gradient_clip_val=0)), progress=False)


def test_two_process_cpu_ddp_smoke(tmp_path):
    """`strategy="ddp"` on 2 CPU processes, launched as a user would, through the CLI."""
    path = tiny_train_recipe(tmp_path)
    cli = Path(sys.executable).with_name("deepinv-tunable")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(cli),
            "train",
            str(path),
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--max-steps",
            "2",
            "--quiet",
            "--no-resume",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["class"] == "TunableVAE"
    assert "model:" in proc.stdout


@pytest.mark.parametrize(
    "name, model",
    [
        ("train_tunable_vae", "tunable_vae"),
        ("train_tunable_ldm", "tunable_ldm"),
        ("train_ordered_flow", "ordered_flow"),
        ("train_hvae", "hvae"),
    ],
)
def test_shipped_training_recipes_validate(name, model):
    recipe = load_train_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.model == model and recipe.preset == "cpu-small"


def test_ldm_objective_is_normalised_per_kept_coordinate(tmp_path):
    """With a network that predicts 0, both terms of eq. 7 estimate E[eps^2] = 1."""
    from deepinv_tunable.training import TunableLDMModule

    TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2).save_pretrained(tmp_path / "vae")
    module = TunableLDMModule(vae=str(tmp_path / "vae"), unet={"block_out_channels": [8, 16]}, k_kind="uniform")
    module.unet.forward = lambda z, t: torch.zeros_like(z)
    torch.manual_seed(0)
    full, trunc = module.loss_terms(torch.randn(512, 2, 16, 16))
    assert float(full) == pytest.approx(1.0, abs=0.01) and float(trunc) == pytest.approx(1.0, abs=0.05)


def test_ldm_trains_from_a_recipe_and_exports_a_unet(tmp_path):
    from deepinv_tunable.nets import LatentUNet

    TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2).save_pretrained(tmp_path / "vae")
    path = tiny_train_recipe(tmp_path, max_epochs=1)
    recipe = load_train_recipe(
        path,
        {"model": "tunable_ldm", "module": {"vae": str(tmp_path / "vae"), "unet": {"block_out_channels": [8, 16]}}},
    )
    result = train(recipe, progress=False)
    unet = LatentUNet.from_pretrained(result.model_dir)
    assert unet.config["latent_channels"] == 2 and unet.config["latent_size"] == 16
    assert 0 < result.metrics["train/loss"] < 10 and "val/eps_mse" in result.metrics
    assert all(0 < result.metrics[f"val/psnr_t{t}"] < 60 for t in (100, 300, 600))
    from deepinv_tunable.training import TunableLDMModule
    from deepinv_tunable.training.ema import WarmupEMA

    [ema] = TunableLDMModule(vae=str(tmp_path / "vae"), unet={"block_out_channels": [8, 16]}).configure_callbacks()
    assert isinstance(ema, WarmupEMA)  # the exported UNet is the moving average
    assert TunableLDMModule(vae=str(tmp_path / "vae"), ema_decay=None).configure_callbacks() == []


def test_ordered_flow_trains_from_a_recipe(tmp_path):
    from deepinv_tunable.nets import OrderedFlow

    path = tiny_train_recipe(tmp_path, max_epochs=2)
    raw = yaml.safe_load(path.read_text())
    raw["model"], raw["module"] = "ordered_flow", {"flow": {"levels": 2, "couplings_per_level": 2, "hidden": 8}}
    path.write_text(yaml.safe_dump(raw))
    recipe = load_train_recipe(path)
    result = train(recipe, progress=False)
    flow = OrderedFlow.from_pretrained(result.model_dir)
    assert flow.latent_shape == (16, 8, 8) and flow.image_size == (32, 32)
    rows = read_metrics_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    nll = [r["train/nll_epoch"] for r in rows if "train/nll_epoch" in r]
    assert len(nll) == 2 and nll[1] < nll[0]


def test_hvae_trains_on_patches_from_a_recipe_with_ema_weights(tmp_path):
    from deepinv_tunable.nets import HVAE

    path = tiny_train_recipe(tmp_path, max_epochs=2)
    raw = yaml.safe_load(path.read_text())
    raw["model"] = "hvae"
    raw["module"] = {"hvae": {"width": 8, "z_channels": 2, "groups_per_scale": [1, 1, 1]}, "ema_decay": 0.9}
    raw["data"]["patch_size"] = 16
    path.write_text(yaml.safe_dump(raw))
    result = train(load_train_recipe(path), progress=False)
    hvae = HVAE.from_pretrained(result.model_dir)
    assert hvae.config["image_size"] == [16, 16] and hvae.n_groups == 3
    assert "val/psnr_autoencode" in result.metrics and "val/psnr_denoise_tau0.8" in result.metrics
    card = (result.model_dir / "README.md").read_text()
    assert "random 16x16 patches" in card
    # export-only gives back the weights of the last checkpoint (the EMA average), card included
    from deepinv_tunable.training import export_checkpoint

    exported = (result.model_dir / "model.safetensors").read_bytes()
    (result.model_dir / "model.safetensors").unlink()
    again = export_checkpoint(load_train_recipe(path))
    assert (again.model_dir / "model.safetensors").read_bytes() == exported
    assert "val/psnr_autoencode" in again.metrics and "8 optimiser steps" in (again.model_dir / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export_checkpoint(load_train_recipe(path, {"output": str(tmp_path / "elsewhere")}))


def _warm_start_learning_rates(module, net, start, n: int) -> list[float]:
    """Check that ``net`` (the module's network) holds ``start``'s weights in training mode, and
    return the learning rates of the module's first ``n`` updates."""
    for name, value in start.state_dict().items():
        assert torch.equal(net.state_dict()[name], value), name
    assert net.training  # loaded for training, not left in eval mode
    config = module.configure_optimizers()
    optimizer, ramp = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(n):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        ramp.step()
    return rates


def test_hvae_module_starts_from_shipped_weights_with_a_learning_rate_ramp(tmp_path):
    from deepinv_tunable.nets import HVAE
    from deepinv_tunable.training.hvae import HVAEModule

    start = HVAE(width=8, z_channels=2, groups_per_scale=(1, 1), image_size=(16, 16))
    start.save_pretrained(tmp_path / "start")
    module = HVAEModule(hvae={"width": 8}, init=str(tmp_path / "start"), warmup_steps=4, lr=1e-3)
    rates = _warm_start_learning_rates(module, module.hvae, start, 6)
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert isinstance(HVAEModule(hvae={"width": 8}).configure_optimizers(), torch.optim.Adamax)
    with pytest.raises(ValueError, match="width=16 vs 8"):
        HVAEModule(hvae={"width": 16}, init=str(tmp_path / "start"))


def test_hvae_module_fine_tunes_a_saved_model_at_another_decoder_std(tmp_path):
    """gamma weights the ELBO's distortion but no weight depends on it: a run may change it, and
    the loss's distortion term scales by exactly (old / new)^2 on the same weights."""
    from deepinv_tunable.nets import HVAE
    from deepinv_tunable.training.hvae import HVAEModule

    start = HVAE(width=8, z_channels=2, groups_per_scale=(1, 1), image_size=(16, 16), gamma=0.02)
    start.save_pretrained(tmp_path / "start")
    module = HVAEModule(hvae={"width": 8, "gamma": 0.01}, init=str(tmp_path / "start"))
    assert module.hvae.gamma == 0.01 and module.hvae.config["gamma"] == 0.01
    for a, b in zip(module.hvae.state_dict().values(), start.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert start.gamma == 0.02  # the saved model is not modified


def test_tunable_vae_module_starts_from_saved_weights_with_a_learning_rate_ramp(tmp_path):
    from deepinv_tunable.nets import TunableVAE
    from deepinv_tunable.training.vae import TunableVAEModule

    start = TunableVAE(image_size=(16, 16), block_out_channels=(8, 8), latent_channels=2)
    start.save_pretrained(tmp_path / "start")
    settings = {"block_out_channels": [8, 8], "latent_channels": 2, "image_size": [16, 16]}
    module = TunableVAEModule(vae=settings, init=str(tmp_path / "start"), warmup_steps=2, lr=1e-3)
    assert _warm_start_learning_rates(module, module.vae, start, 3) == pytest.approx([5e-4, 1e-3, 1e-3])
    assert isinstance(TunableVAEModule(vae=settings).configure_optimizers(), torch.optim.Adam)
    with pytest.raises(ValueError, match="latent_channels=4 vs 2"):
        TunableVAEModule(vae={**settings, "latent_channels": 4}, init=str(tmp_path / "start"))
    with pytest.raises(ValueError, match="holds a TunableVAE, not a HVAE"):
        from deepinv_tunable.training.hvae import HVAEModule

        HVAEModule(init=str(tmp_path / "start"))


@pytest.mark.parametrize(
    "name",
    [
        "train_hvae_corpus",
        "train_hvae_corpus_gamma01",
        "train_tunable_vae_corpus",
        "train_tunable_vae_f4_corpus",
        "train_tunable_vae_corpus_continue",
        "train_tunable_vae_f4_corpus_continue",
        "train_tunable_vae_f4c12_corpus",
        "train_ordered_flow_corpus",
        "train_tunable_ldm_corpus",
        "train_tunable_ldm_f4c12_corpus",
        "train_severity_encoder_corpus",
        "train_severity_encoder_f4c12_corpus",
        "train_dncnn_corpus_L",
        "train_dncnn_corpus_M",
        "train_dncnn_corpus_H",
        "train_drunet_corpus",
    ],
)
def test_corpus_training_recipes_validate(name):
    from deepinv_tunable.training.run import resolve

    _, data, _ = resolve(load_train_recipe(REPO / "recipes" / f"{name}.yaml"))
    assert data.input == "corpus" and data.patch_size is not None


@pytest.mark.parametrize("name", ["train_tunable_vae_corpus_continue", "train_tunable_vae_f4_corpus_continue"])
def test_continue_recipes_start_from_their_committed_weights(name, monkeypatch):
    from deepinv_tunable.training.run import MODULES, resolve

    monkeypatch.chdir(REPO)  # a recipe names a shipped model or a candidate folder of the repository
    recipe = load_train_recipe(REPO / "recipes" / f"{name}.yaml")
    module_kwargs, _, _ = resolve(recipe)
    module = MODULES[recipe.model](**module_kwargs)  # raises if the recipe's network differs from the candidate's
    candidate = pretrained.load(module_kwargs["init"])  # a shipped name, or a folder relative to REPO
    for key, value in candidate.state_dict().items():
        assert torch.equal(module.vae.state_dict()[key], value), key


def test_random_patches_have_the_size_asked_and_avoid_air():
    from deepinv_tunable.training.data import AugmentedSlices

    slices = torch.zeros(3, 1, 32, 32)
    slices[:, :, 16:, 16:] = 1.0  # one bright quadrant; the rest is "air"
    data = AugmentedSlices(slices, samples_per_epoch=40, transform=None, patch_size=16, min_foreground=0.05)
    torch.manual_seed(0)
    patches = [data[i] for i in range(40)]
    assert all(p.shape == (1, 16, 16) for p in patches)
    assert sum(float(p.mean()) >= 0.05 for p in patches) >= 38
    with pytest.raises(ValueError, match="patch_size 40 exceeds"):
        AugmentedSlices(slices, 4, None, patch_size=40)


def test_training_recipes_are_read_like_reconstruction_recipes(tmp_path):
    from deepinv_tunable.recipes import RecipeError
    from deepinv_tunable.training.run import load_train_recipe

    with pytest.raises(FileNotFoundError, match="training recipe file not found"):
        load_train_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: hvae\n  preset: [cpu-small\n")
    with pytest.raises(RecipeError, match="training recipe '.*bad.yaml' is not valid YAML"):
        load_train_recipe(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- model\n- hvae\n")
    with pytest.raises(RecipeError, match="must be a mapping of keys to values, got a list"):
        load_train_recipe(listed)


def test_a_resumed_pixel_prior_run_trains_at_the_recipes_learning_rate():
    """Lightning restores the optimizer's learning rate on resume; the recipe's ``lr`` (an anneal
    at the plateau) is what the run then trains at."""
    from types import SimpleNamespace

    from deepinv_tunable.training.drunet import ConditionalDenoiserModule

    module = ConditionalDenoiserModule(drunet={"nc": (8, 8, 8, 8), "nb": 1}, lr=2e-5)
    restored = torch.optim.Adam(module.net.parameters(), lr=2e-4)  # as the checkpoint left it
    module.trainer = SimpleNamespace(optimizers=[restored])
    module.on_train_start()
    assert [g["lr"] for g in restored.param_groups] == [2e-5]
