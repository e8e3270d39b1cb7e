"""`smalldata export` and `export_model`: ONNX and TorchScript files that equal PyTorch and carry the preprocessing."""

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import run_torchscript, write_segmenter_config

from smalldata_pl.cli import main
from smalldata_pl.inference import export as export_module
from smalldata_pl.inference import load_predictor
from smalldata_pl.inference.export import export_model, read_metadata
from smalldata_pl.tasks import MicrographClassifier

REPO = Path(__file__).resolve().parents[1]


def _fit(folder: Path, *args: str) -> Path:
    """One epoch of `smalldata fit` in ``folder``; its last.ckpt."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HF_HUB_OFFLINE", "1")
        main(["fit", *args, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
        return next((folder / "lightning_logs").rglob("last.ckpt")).resolve()


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fit(tmp_path_factory.mktemp("classifier"), "-c", str(REPO / "configs" / "smoke.yaml"))


@pytest.fixture(scope="module")
def segmenter_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("segmenter")
    return _fit(folder, "-c", str(write_segmenter_config(folder / "seg.yaml")))


def _torch_logits(checkpoint: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs (input, PyTorch logits) at the UHCS micrograph size and at small sizes off the stride, batch 1-3."""
    model = load_predictor(checkpoint).model
    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 1, 475, 645), (3, 1, 64, 80), (2, 1, 33, 47)]:
        image = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            yield image.numpy(), model(image).numpy()


def _checkpoint_preprocessing(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["preprocessing"]


def test_export_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="torchscript"):
        export_model(tmp_path / "any.ckpt", tmp_path / "model.tflite", "tflite")


@pytest.mark.slow
def test_onnx_classifier_equals_pytorch_with_any_batch_and_size(classifier_checkpoint, tmp_path):
    out = export_model(classifier_checkpoint, tmp_path / "classifier.onnx", "onnx")
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "image" and isinstance(given.shape[0], str) and isinstance(given.shape[2], str)
    for image, expected in _torch_logits(classifier_checkpoint):
        (logits,) = session.run(["logits"], {"image": image})
        assert logits.shape == (len(image), 4)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    # The preprocessing record is ONNX metadata any runtime reads, identical to the checkpoint's.
    stored = session.get_modelmeta().custom_metadata_map
    preprocessing = json.loads(stored["preprocessing"])
    assert preprocessing == _checkpoint_preprocessing(classifier_checkpoint)
    assert preprocessing["class_names"] == ["fine_equiaxed", "coarse_equiaxed", "elongated", "bimodal"]
    assert {"in_chans", "mean", "std", "image_size", "invariances", "task"} <= preprocessing.keys()
    export = read_metadata(out)["export"]
    assert export["input"]["shape"] == ["batch", 1, "height", "width"] and export["output"]["shape"] == ["batch", 4]
    assert export["check"]["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_torchscript_classifier_equals_pytorch_and_carries_the_record(classifier_checkpoint, tmp_path):
    out = export_model(classifier_checkpoint, tmp_path / "classifier.pt", "torchscript")
    for image, expected in _torch_logits(classifier_checkpoint):
        np.testing.assert_allclose(run_torchscript(out, image), expected, rtol=0, atol=1e-4)
    files = {"preprocessing.json": "", "export.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(out, _extra_files=files)
    assert json.loads(files["preprocessing.json"]) == _checkpoint_preprocessing(classifier_checkpoint)
    assert json.loads(files["export.json"])["format"] == "torchscript"


@pytest.mark.slow
def test_a_model_that_takes_only_its_training_size_is_exported_at_that_size(
    classifier_checkpoint, tmp_path, monkeypatch
):
    forward = MicrographClassifier.forward

    def training_size_only(self: MicrographClassifier, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (48, 48):
            raise RuntimeError("this backbone takes 48 x 48 px only")
        return forward(self, images)

    monkeypatch.setattr(MicrographClassifier, "forward", training_size_only)
    out = export_model(classifier_checkpoint, tmp_path / "fixed.pt", "torchscript")
    assert read_metadata(out)["export"]["input"]["shape"] == ["batch", 1, 48, 48]
    image = np.random.default_rng(0).standard_normal((5, 1, 48, 48)).astype(np.float32)
    assert run_torchscript(out, image).shape == (5, 4)


@pytest.mark.slow
def test_segmenter_exports_equal_pytorch_off_the_stride(segmenter_checkpoint, tmp_path):
    onnx_file = export_model(segmenter_checkpoint, tmp_path / "segmenter.onnx", "onnx")
    torchscript_file = export_model(segmenter_checkpoint, tmp_path / "segmenter.pt", "torchscript")
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    for image, expected in _torch_logits(segmenter_checkpoint):
        assert expected.shape == (len(image), 2, *image.shape[2:])
        np.testing.assert_allclose(session.run(["logits"], {"image": image})[0], expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(run_torchscript(torchscript_file, image), expected, rtol=0, atol=1e-4)
    for path in (onnx_file, torchscript_file):
        metadata = read_metadata(path)
        assert metadata["preprocessing"]["class_names"] == ["grain", "boundary"]
        assert metadata["export"]["output"]["shape"] == ["batch", 2, "height", "width"]


@pytest.mark.slow
def test_an_export_that_disagrees_with_pytorch_is_not_written(segmenter_checkpoint, tmp_path, monkeypatch):
    # Traced at a stride multiple, torch.export freezes the segmenter's "no padding" branch: the graph takes any
    # size but is wrong off the stride. The check against PyTorch must catch it.
    make_inputs = export_module._inputs

    def stride_multiple_example(*args: object) -> export_module._Inputs:
        inputs = make_inputs(*args)
        inputs.example = torch.randn(2, 1, 64, 96)
        return inputs

    monkeypatch.setattr(export_module, "_inputs", stride_multiple_example)
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_model(segmenter_checkpoint, tmp_path / "wrong.onnx", "onnx")
    assert not (tmp_path / "wrong.onnx").exists()


@pytest.mark.slow
def test_export_command_writes_model_file_and_reports_the_check(classifier_checkpoint, tmp_path, capsys):
    main(["export", str(classifier_checkpoint), "--format", "torchscript"])
    assert "max |exported - PyTorch|" in capsys.readouterr().out
    assert read_metadata(tmp_path / "model.pt")["export"]["checkpoint"] == "last.ckpt"
    main(["export", str(classifier_checkpoint), "--out", str(tmp_path / "deploy" / "uhcs.onnx")])
    assert read_metadata(tmp_path / "deploy" / "uhcs.onnx")["export"]["format"] == "onnx"
