"""Checkpoint integrity: every weights file carries its SHA-256 in its config, a changed file is
refused with the digests named, and an unreadable file is a clear error, not a raw traceback."""

from __future__ import annotations

import json

import pytest
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.nets import CheckpointError, DnCNN
from deepinv_tunable.utils.atomic import file_sha256


def test_every_shipped_checkpoint_records_the_digest_of_its_weights():
    for name in pretrained.available():
        folder = pretrained.path(name)
        config = json.loads((folder / "config.json").read_text())
        assert config.get("sha256") == file_sha256(folder / "model.safetensors"), name


def test_save_records_the_digest_and_load_checks_it(tmp_path):
    torch.manual_seed(0)
    DnCNN(depth=3, num_filters=4, trained_sigma=0.1).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    assert json.loads((tmp_path / "m" / "config.json").read_text())["sha256"] == file_sha256(weights)
    DnCNN.from_pretrained(tmp_path / "m")  # intact: loads
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside the last tensor: still a valid file, other values
    weights.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match=r"model.safetensors has SHA-256 [0-9a-f]{64}, but its config.json records"
    ):
        DnCNN.from_pretrained(tmp_path / "m")


def test_corrupted_header_and_non_finite_weights_are_checkpoint_errors(tmp_path):
    net = DnCNN(depth=3, num_filters=4, trained_sigma=0.1)
    net.save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    del config["sha256"]  # a checkpoint written before digests were kept: the content checks still run
    config_path.write_text(json.dumps(config))
    weights = tmp_path / "m" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"\x10\x00" + good[2:])  # header length field destroyed
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        DnCNN.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        net.body[0].weight[0, 0, 0, 0] = float("nan")
    net.save_pretrained(tmp_path / "n")
    config = json.loads((tmp_path / "n" / "config.json").read_text())
    del config["sha256"]
    (tmp_path / "n" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"non-finite values in \['body.0.weight'\]"):
        DnCNN.from_pretrained(tmp_path / "n")


def test_half_precision_storage_halves_the_file_and_loads_the_rounded_weights_in_float32(tmp_path):
    torch.manual_seed(0)
    net = DnCNN(depth=3, num_filters=8, trained_sigma=0.1)
    net.save_pretrained(tmp_path / "full")
    net.save_pretrained(tmp_path / "half", dtype=torch.float16)
    full, half = (tmp_path / d / "model.safetensors" for d in ("full", "half"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = DnCNN.from_pretrained(tmp_path / "half")
    for (name, p), q in zip(loaded.state_dict().items(), net.state_dict().values(), strict=True):
        assert p.dtype == q.dtype, name  # float32 weights, int64 counters
        torch.testing.assert_close(p, q.half().float() if q.is_floating_point() else q, atol=0, rtol=0)
