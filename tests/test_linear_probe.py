"""The linear probe: logistic regression on cached frozen features, written into the head (probe strategy, LP-FT)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tensorboard_scalars, write_manifest_config
from lightning.pytorch import Callback, Trainer

from smalldata_pl.callbacks import LinearProbe, StagedUnfreezing
from smalldata_pl.callbacks.linear_probe import head_linear
from smalldata_pl.cli import main
from smalldata_pl.datamodules import MicrographFolder
from smalldata_pl.models.features import FeatureCache, pooled_features
from smalldata_pl.models.probe import fit_probe, write_linear
from smalldata_pl.tasks import MicrographClassifier
from smalldata_pl.transforms.views import IDENTITY, allowed_views

PROBE = '[{"class_path": "smalldata_pl.callbacks.LinearProbe", "init_args": {"probe_only": true}}]'


def blobs(num_classes: int, rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable-ish rows with very different feature scales and offsets (what the folded standardisation undoes)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % num_classes
    centres = rng.normal(size=(num_classes, features))
    x = centres[labels] + rng.normal(scale=1.5, size=(rows, features))
    x = x * rng.uniform(0.01, 100, size=features) + rng.uniform(-50, 50, size=features)
    return x, labels, np.array([f"g{i // 2}" for i in range(rows)])


@pytest.mark.parametrize("num_classes", [2, 3])
def test_probe_head_equals_sklearns_decision_function(num_classes):
    x, y, groups = blobs(num_classes, 60, 12)
    solution = fit_probe(x, y, groups, num_classes, C=0.3)
    decision = solution.estimator.decision_function(x)
    folded = x @ solution.weight.T + solution.bias
    if num_classes == 2:  # one logit in scikit-learn, two symmetric rows in the head
        np.testing.assert_allclose(folded[:, 1] - folded[:, 0], decision, atol=1e-8)
        np.testing.assert_allclose(folded.sum(axis=1), 0, atol=1e-8)
    else:
        np.testing.assert_allclose(folded, decision, atol=1e-8)
    linear = torch.nn.Linear(12, num_classes, dtype=torch.float64)
    write_linear(linear, solution)
    logits = linear(torch.from_numpy(x)).detach().numpy()
    probabilities = torch.from_numpy(logits).softmax(dim=1).numpy()
    np.testing.assert_allclose(probabilities, solution.estimator.predict_proba(x), atol=1e-10)
    assert solution.C == 0.3 and solution.inner_accuracy is None


def test_probe_chooses_c_by_inner_group_cross_validation_and_names_missing_classes():
    x, y, groups = blobs(3, 60, 8)
    solution = fit_probe(x, y, groups, 3, C="cv", Cs=[0.001, 1.0], inner_folds=3)
    assert solution.C in (0.001, 1.0) and 0 <= solution.inner_accuracy <= 1
    with pytest.raises(ValueError, match=r"classes \[3\] have no training images"):
        fit_probe(x, y, groups, 4)


class CountingBackbone(torch.nn.Module):
    """Mean of each channel as the 'pooled features', counting the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += len(images)
        return torch.cat([images.mean(dim=(2, 3)), images[:, :, 0, :].mean(dim=2)], dim=1) * self.scale


def test_features_are_cached_per_image_view_backbone_and_preprocessing():
    images = [{"image": torch.rand(2, 4, 6 if i % 2 else 4)} for i in range(5)]  # two shapes: batched apart
    backbone, cache = CountingBackbone(), FeatureCache()
    views = allowed_views(rotation=True, mirror=True)
    keys = [f"img{i}" for i in range(5)]
    first = pooled_features(backbone, images, views, "224px", keys, cache, batch_size=3)
    assert first.shape == (8, 5, 4) and backbone.seen == 40
    # Each view's row is the backbone's features of that view of the image.
    expected = backbone(views[1].forward(images[3]["image"])[None])[0].detach().numpy()
    np.testing.assert_allclose(first[1, 3], expected, atol=1e-6)
    again = pooled_features(backbone, images, views, "224px", keys, cache)
    np.testing.assert_array_equal(again, first)
    assert backbone.seen == 41  # (the one image above) nothing recomputed
    pooled_features(backbone, images, [IDENTITY], "448px", keys, cache)  # other preprocessing: computed again
    assert backbone.seen == 46
    with torch.no_grad():
        backbone.scale.fill_(2.0)  # other weights (e.g. after fine-tuning): never the stale rows
    changed = pooled_features(backbone, images, [IDENTITY], "224px", keys, cache)
    np.testing.assert_allclose(changed[0], 2 * first[0], rtol=1e-6)
    assert len(cache) == 5 * 8 + 5 + 5


def probe_config(tmp_path: Path, manifest: Path, max_epochs: int = 1) -> Path:
    return write_manifest_config(
        tmp_path / "probe.yaml", manifest, max_epochs=max_epochs, num_folds=2, leakage_check='"off"'
    )


def test_probe_fit_through_the_cli_writes_a_checkpoint_that_validate_scores_identically(tmp_path, grouped_manifest):
    config = probe_config(tmp_path, grouped_manifest, max_epochs=5)
    main(["fit", "-c", str(config), f"--trainer.callbacks={PROBE}"])
    run = tmp_path / "lightning_logs" / "smalldata" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (0, 1)  # validated after one undone batch, stopped
    fitted = tensorboard_scalars(run)
    assert fitted["probe/C"] == [1.0] and fitted["probe/rows"] == [10.0]
    main(["validate", "-c", str(config), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    validated = tensorboard_scalars(tmp_path / "lightning_logs" / "smalldata" / "version_1")
    assert validated["val/acc"] == pytest.approx(fitted["val/acc"], abs=1e-6)
    assert validated["val/loss"] == pytest.approx(fitted["val/loss"], abs=1e-6)


def test_probe_strategy_runs_in_cv_and_study(tmp_path, grouped_manifest):
    config = probe_config(tmp_path, grouped_manifest)
    main(["cv", "-c", str(config), f"--trainer.callbacks={PROBE}", "--cv_dir", str(tmp_path / "cv")])
    folds = json.loads((tmp_path / "cv" / "summary.json").read_text())["folds"]
    assert len(folds) == 2 and all(0 <= f["val/acc"] <= 1 for f in folds.values())
    assert all((tmp_path / "cv" / f"fold_{k}" / "checkpoints" / "last.ckpt").is_file() for k in range(2))
    out = tmp_path / "study"
    main(["study", "-c", str(config), "--sizes", "all", "--strategies", "probe,probe_views", "--folds", "1",
          "--out", str(out)])  # fmt: skip
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["strategy"] for r in rows] == ["probe", "probe_views"] and all(
        0 <= float(r["val_acc"]) <= 1 for r in rows
    )
    # probe_views: a feature row per allowed view (8 here) of every training image, validated over the same views.
    fitted = {run.parent.name: tensorboard_scalars(run.parent) for run in (out / "runs").rglob("events.out.tfevents.*")}
    assert fitted["probe_views_nall_r0_f0"]["probe/rows"] == [8 * fitted["probe_nall_r0_f0"]["probe/rows"][0]]
    hparams = {name: yaml.safe_load((out / "runs" / name / "hparams.yaml").read_text()) for name in fitted}
    assert hparams["probe_views_nall_r0_f0"]["tta"] is True and hparams["probe_nall_r0_f0"]["tta"] is False


class FirstValidation(Callback):
    """Records the head at the first training step and the accuracy of the validation before it."""

    def on_sanity_check_end(self, trainer, pl_module):
        self.accuracy = float(trainer.callback_metrics["val/acc"])

    def on_train_start(self, trainer, pl_module):
        self.head = head_linear(pl_module).weight.detach().clone()


def test_lpft_starts_fine_tuning_from_the_probe_head(grouped_manifest):
    def fit(*callbacks: Callback) -> MicrographClassifier:
        data = MicrographFolder(
            grouped_manifest.parent, grouped_manifest, num_folds=2, image_size=32, batch_size=4, leakage_check="off"
        )
        model = MicrographClassifier("test_resnet", num_classes=2, in_chans=1)
        trainer = Trainer(
            max_epochs=1,
            callbacks=list(callbacks),
            num_sanity_val_steps=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=data)
        return trainer

    torch.manual_seed(0)
    probe, probed = LinearProbe(probe_only=True), FirstValidation()
    probe_model = fit(probe, probed).lightning_module
    # The head after the probe-only fit reproduces scikit-learn on the cached features.
    decision = probe.solution.estimator.decision_function(probe.features)
    with torch.no_grad():
        logits = probe_model.head[-1](torch.from_numpy(probe.features).float()).double().numpy()
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], decision, rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)  # the same random backbone, so the same features and the same probe
    lpft, tuned = LinearProbe(), FirstValidation()
    trainer = fit(lpft, StagedUnfreezing(unfreeze_at=[0]), tuned)
    assert torch.allclose(tuned.head, torch.from_numpy(lpft.solution.weight).float())
    assert torch.equal(tuned.head, probed.head)
    assert tuned.accuracy == probed.accuracy  # the first validation of LP-FT scores the probe
    assert trainer.global_step > 1  # and then it trains
