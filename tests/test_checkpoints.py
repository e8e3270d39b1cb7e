"""Checkpoints that never lose work, refuse the wrong classes, and leave an inference caller's RNGs alone."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smalldata_pl.cli import main
from smalldata_pl.tasks import MicrographClassifier

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def _checkpoints() -> Path:
    return Path("lightning_logs/smoke/version_0/checkpoints")


def test_last_checkpoint_is_the_final_epoch_even_when_the_monitor_never_improves_again():
    # Monitoring the step with mode=min: only the first epoch is ever "best", so Lightning's own save_last would
    # leave last.ckpt at epoch 0.
    main(["fit", "-c", SMOKE, "--trainer.max_epochs=3", "--checkpoint.monitor=step", "--checkpoint.mode=min"])
    last = torch.load(_checkpoints() / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2
    assert last["global_step"] == 3 * 2  # 16 training images / batch 8 = 2 steps per epoch
    best = [p for p in _checkpoints().iterdir() if p.name != "last.ckpt"]
    # Named after the metric that chose it (not after val/loss, which the default monitors).
    assert [p.name for p in best] == ["epoch000-step=2.0000.ckpt"]


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_exits_non_zero(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["fit", "-c", SMOKE, "--trainer.max_epochs=5", "--trainer.callbacks+=sigterm_callback.SigtermAtStep"]
    result = subprocess.run(
        [sys.executable, "-m", "smalldata_pl", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    assert "stopped by SIGTERM" in result.stderr
    last = torch.load(tmp_path / _checkpoints() / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3


def test_a_permuted_class_list_is_refused_with_both_lists():
    main(["fit", "-c", SMOKE, "--trainer.max_epochs=1"])
    ckpt = str(_checkpoints() / "last.ckpt")
    trained = ["fine_equiaxed", "coarse_equiaxed", "elongated", "bimodal"]
    model = MicrographClassifier("test_resnet", num_classes=4, class_names=[trained[i] for i in (1, 0, 2, 3)])
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["class_names"] == trained
    with pytest.raises(ValueError, match="another order") as error:
        model.on_load_checkpoint(checkpoint)
    assert str(trained) in str(error.value) and str(model.class_names) in str(error.value)
    three = MicrographClassifier("test_resnet", num_classes=3, class_names=trained[:3])
    with pytest.raises(ValueError, match="train a new model"):
        three.on_load_checkpoint(checkpoint)


def test_loading_for_inference_leaves_the_callers_rngs_alone():
    main(["fit", "-c", SMOKE, "--trainer.max_epochs=1"])
    # Building the model draws its initial weights from the caller's generator either way; what must not happen is
    # the checkpoint's saved training RNG state replacing the caller's stream.
    torch.manual_seed(123)
    np.random.seed(123)
    MicrographClassifier("test_resnet", num_classes=4)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    MicrographClassifier.load_from_checkpoint(_checkpoints() / "last.ckpt", map_location="cpu")
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_numpy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_states_are_checkpointed_and_restored_on_resume():
    model = MicrographClassifier("test_resnet", num_classes=4)
    torch.cuda.manual_seed_all(11)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(99)

    class _FitTrainer:
        class state:
            fn = "fit"

    model._trainer = _FitTrainer()  # type: ignore[assignment]
    model.on_load_checkpoint(checkpoint)
    assert torch.equal(torch.rand(4, device="cuda"), expected)
