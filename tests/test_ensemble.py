"""Ensembles: several checkpoints applied as one model, their class probabilities averaged."""

from pathlib import Path

import lightning as L
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import run_torchscript, write_image, write_segmenter_config
from PIL import Image

from smalldata_pl.cli import main
from smalldata_pl.datamodules import SegmentationFolder, SyntheticGrainBoundaries
from smalldata_pl.inference import load_predictor
from smalldata_pl.inference.ensemble import ModelEnsemble, SegmenterEnsemble, ensemble
from smalldata_pl.inference.export import read_metadata
from smalldata_pl.tasks import MicrographClassifier, MicrographSegmenter


def _segmenter(seed: int, **kwargs: object) -> MicrographSegmenter:
    torch.manual_seed(seed)
    return MicrographSegmenter("test_resnet", num_classes=3, boundary_class=2, **kwargs).eval()  # type: ignore[arg-type]


def _run_exported(path: Path, image: torch.Tensor) -> np.ndarray:
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"image": image.numpy()})[0]
    return run_torchscript(path, image.numpy())


def test_the_ensemble_predicts_the_mean_probability_of_its_members():
    members = [_segmenter(0), _segmenter(1, edge_input="only")]
    model = ensemble(members)
    assert isinstance(model, SegmenterEnsemble) and model.boundary_class == 2
    image = torch.rand(2, 1, 37, 45)
    with torch.no_grad():
        expected = torch.stack([m(image).softmax(dim=1) for m in members]).mean(dim=0)
        torch.testing.assert_close(model(image).softmax(dim=1), expected)
        torch.testing.assert_close(model.predict_logits(image).softmax(dim=1), expected)


def test_an_ensemble_of_classifiers_averages_their_class_probabilities():
    members = [MicrographClassifier("test_resnet", num_classes=4).eval() for _ in range(3)]
    model = ensemble(members)
    assert type(model) is ModelEnsemble and not hasattr(model, "predict_logits")
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = torch.stack([m(image).softmax(dim=1) for m in members]).mean(dim=0)
        torch.testing.assert_close(model(image).exp(), expected)


def test_ensembles_refuse_members_that_do_not_fit_together():
    with pytest.raises(ValueError, match="at least two"):
        ensemble([_segmenter(0)])
    with pytest.raises(ValueError, match="not both"):
        ensemble([_segmenter(0), MicrographClassifier("test_resnet", num_classes=3)])
    other_classes = MicrographSegmenter("test_resnet", num_classes=3, class_names=["a", "b", "c"], boundary_class=2)
    with pytest.raises(ValueError, match="share their classes"):
        ensemble([_segmenter(0), other_classes])
    with pytest.raises(ValueError, match="tile_size"):
        ensemble([_segmenter(0), _segmenter(1, tile_size=64)])


@pytest.mark.slow
def test_apply_and_export_average_an_ensemble_and_refuse_checkpoints_of_other_preprocessing(
    tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    checkpoints = []
    for name, options in [("image", {}), ("edges", {"edge_input": "only"})]:
        main(["fit", "-c", str(write_segmenter_config(tmp_path / f"{name}.yaml", **options))])
        (last,) = (tmp_path / "lightning_logs").rglob("last.ckpt")
        checkpoints.append(last.rename(tmp_path / f"{name}.ckpt"))
    image = write_image(tmp_path / "new" / "tile.png", (np.random.default_rng(0).random((40, 52)) * 255).astype("u1"))
    main(["apply", str(checkpoints[0]), str(image), "--ensemble", str(checkpoints[1]), "--out", str(tmp_path / "out")])
    written = np.asarray(Image.open(tmp_path / "out" / "masks" / "tile.png"))
    predictor = load_predictor(checkpoints)
    assert isinstance(predictor.model, SegmenterEnsemble)
    np.testing.assert_array_equal(written, predictor.predict(image).mask)
    # Exported as one file (ONNX and TorchScript), the ensemble computes what it computes in PyTorch.
    for suffix in (".onnx", ".pt"):
        out = tmp_path / f"ensemble{suffix}"
        main(["export", str(checkpoints[0]), "--ensemble", str(checkpoints[1]), "--out", str(out)]
             + ["--format", "torchscript"] * (suffix == ".pt"))  # fmt: skip
        assert read_metadata(out)["export"]["ensemble"] == ["image.ckpt", "edges.ckpt"]
        tensor = torch.randn(2, 1, 45, 70)
        with torch.inference_mode():
            expected = predictor.model(tensor).numpy()
        np.testing.assert_allclose(_run_exported(out, tensor), expected, rtol=0, atol=1e-4)
    # An ensemble of one model with itself is that model.
    alone = load_predictor(checkpoints[0]).predict(image).mask
    np.testing.assert_array_equal(load_predictor([checkpoints[0]] * 2).predict(image).mask, alone)
    main(["fit", "-c", str(write_segmenter_config(tmp_path / "wide.yaml")), "--data.init_args.image_size=48"])
    (wider,) = (tmp_path / "lightning_logs").rglob("last.ckpt")
    with pytest.raises(ValueError, match=r"other preprocessing than .*image\.ckpt \(window differ\)"):
        load_predictor([checkpoints[0], wider])


def test_a_segmenter_trained_on_real_crops_joins_one_trained_on_synthetic_images_of_the_same_window(tmp_path: Path):
    """Segmenters apply at the image's own scale: a synthetic model's image_size and a folder model's crop_size of
    the same side both only set the window, so the two make an ensemble (a distilled student beside its teacher).
    A folder model whose augmentation zooms larger crops down to that side was trained on it too, and joins them."""
    rng = np.random.default_rng(0)
    rows = ["image,mask"]
    for index in range(4):
        mask = np.zeros((40, 40), np.uint8)
        mask[:, rng.integers(8, 32)] = 1
        write_image(tmp_path / "real" / f"{index}.png", (rng.random((40, 40)) * 255).astype(np.uint8))
        write_image(tmp_path / "real" / f"{index}_mask.png", mask)
        rows.append(f"{index}.png,{index}_mask.png")
    (tmp_path / "real" / "manifest.csv").write_text("\n".join(rows) + "\n")
    synthetic = SyntheticGrainBoundaries(train_size=4, val_size=2, image_size=32, batch_size=4)
    folder = SegmentationFolder(tmp_path / "real", ["grain", "boundary"], num_folds=None, crop_size=32, batch_size=4)
    zoom = [{"RandomResizedCrop": {"size": [32, 32], "scale": [0.64, 1.0], "ratio": [1.0, 1.0]}}]
    zoomed = SegmentationFolder(
        tmp_path / "real", ["grain", "boundary"], num_folds=None, crop_size=40, batch_size=4, augmentation=zoom
    )
    checkpoints = []
    for name, data in (("synthetic", synthetic), ("real", folder), ("zoomed", zoomed)):
        model = MicrographSegmenter("test_resnet", class_names=["grain", "boundary"], boundary_class=1)
        trainer = L.Trainer(
            max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(model, datamodule=data)
        trainer.save_checkpoint(tmp_path / f"{name}.ckpt")
        checkpoints.append(tmp_path / f"{name}.ckpt")
    # The zoomed model cut 40 px crops and saw 32 px ones: its record says what it saw.
    assert torch.load(checkpoints[2], weights_only=True)["preprocessing"]["crop_size"] == 32
    image = tmp_path / "real" / "0.png"
    mean = np.mean([load_predictor(c).predict(image).probabilities for c in checkpoints], axis=0)
    np.testing.assert_allclose(load_predictor(checkpoints).predict(image).probabilities, mean, atol=1e-5)
