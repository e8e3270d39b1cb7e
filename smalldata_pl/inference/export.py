"""A trained checkpoint as one portable file: ONNX or TorchScript, with its preprocessing record inside."""

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn

from smalldata_pl.inference.predictor import load_model

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# ONNX metadata_props keys; in a TorchScript file the same records are the extra files `<key>.json`.
PREPROCESSING_KEY = "preprocessing"
EXPORT_KEY = "export"
# Largest |exported - PyTorch| accepted, relative to the largest logit (at least 1).
TOLERANCE = 1e-4


@dataclass
class _Inputs:
    """The traced example and the differently shaped inputs the exported file is checked on."""

    example: torch.Tensor
    checks: list[torch.Tensor]
    shape: list[int | str]


def export_model(checkpoint: str | Path | Sequence[str | Path], out: str | Path, format: ExportFormat = "onnx") -> Path:
    """Export a classifier or segmenter checkpoint of ``smalldata fit`` to ONNX or TorchScript.

    Several checkpoints (of one task, classes and preprocessing, as ``smalldata apply --ensemble`` takes them)
    become one file whose logits are the log of the members' mean probability
    (:class:`~smalldata_pl.inference.ensemble.ModelEnsemble`): its softmax is the ensemble's prediction.

    The file maps the normalised image tensor ``image`` ``[N, C, H, W]`` (the training mean/std already applied)
    to ``logits``: ``[N, K]`` for a classifier, ``[N, K, H, W]`` for a segmenter (which pads to its encoder stride
    and crops back inside the graph). Batch, height and width are free where the model allows it; a model that
    accepts only its training size is exported at that size. Segmenters run on the whole input: sliding windows
    (``tile_size``) and classifier tiling stay with the caller, guided by the embedded record.

    Two JSON records travel inside the file (see :func:`read_metadata`): ``preprocessing``, the checkpoint's
    record (task, class names, ``in_chans``, mean/std, image/crop/tile size, invariances), and ``export`` (input
    and output names and shapes, format, opset, the check below). Before anything is written the exported model is
    run on two inputs of other batch and spatial sizes than the traced one and compared with PyTorch.

    Example:
        >>> export_model("lightning_logs/run/version_0/checkpoints/last.ckpt", "model.onnx")  # doctest: +SKIP
        >>> read_metadata("model.onnx")["preprocessing"]["class_names"]  # doctest: +SKIP

    Args:
        checkpoint: A checkpoint of ``smalldata fit`` (written with a preprocessing record), or an ensemble's
            several.
        out: The file to write.
        format: ``onnx`` (needs the ``export`` extra: onnxscript, onnxruntime) or ``torchscript``.

    Returns:
        The written file.

    Raises:
        ValueError: For an unknown format, a checkpoint without preprocessing record or of another task, or an
            ensemble's checkpoints of other preprocessing or classes.
        RuntimeError: If the exported model disagrees with PyTorch by more than :data:`TOLERANCE`.
    """
    if format not in SUFFIXES:
        raise ValueError(f"format must be one of {sorted(SUFFIXES)}, got {format!r}")
    loaded = load_model(checkpoint)
    model, preprocessing, paths = loaded.model.eval(), loaded.preprocessing, loaded.paths
    if loaded.hparams.get("tta"):
        # The graph is the network on one view; the score the model was validated with averaged several.
        log.warning(
            "%s was validated with test-time augmentation; the exported model scores one view: average its softmax "
            "over the views of preprocessing['invariances'] (rotations and/or mirrors) to match it",
            paths[0],
        )
    inputs = _inputs(model, preprocessing)
    record: dict[str, Any] = {
        "format": format,
        "input": {"name": INPUT_NAME, "shape": inputs.shape, "normalised": True},
        "output": {"name": OUTPUT_NAME, "shape": _output_shape(model, inputs.shape)},
        "torch": torch.__version__.split("+")[0],
        "checkpoint": paths[0].name,
    }
    if len(paths) > 1:
        record["ensemble"] = [path.name for path in paths]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        _write_onnx(model, inputs, preprocessing, record, out)
    else:
        _write_torchscript(model, inputs, preprocessing, record, out)
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``preprocessing`` and ``export`` records embedded by :func:`export_model` (``.onnx`` or TorchScript)."""
    path = Path(path)
    keys = (PREPROCESSING_KEY, EXPORT_KEY)
    if path.suffix == SUFFIXES["onnx"]:
        session = _onnx_session(str(path))
        stored = session.get_modelmeta().custom_metadata_map
    else:
        files = {f"{key}.json": "" for key in keys}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            torch.jit.load(path, map_location="cpu", _extra_files=files)
        stored = {key: files[f"{key}.json"] for key in keys}
    missing = [key for key in keys if not stored.get(key)]
    if missing:
        raise ValueError(f"{path} carries no {' or '.join(missing)} record; was it written by `smalldata export`?")
    return {key: json.loads(stored[key]) for key in keys}


def _inputs(model: nn.Module, preprocessing: dict[str, Any]) -> _Inputs:
    """Example and check inputs whose sizes differ from each other and are not multiples of the stride.

    Sizes that need padding take the segmenter's pad branch while tracing, which is also right for sizes that need
    none (a zero pad); the checks include stride multiples and another batch size to prove it.
    """
    channels = int(preprocessing.get("in_chans", 1))
    side = int(preprocessing.get("crop_size") or preprocessing.get("image_size") or 64)
    stride = int(getattr(model, "stride", 32))
    base = stride * max(1, round(side / stride))

    def image(batch: int, height: int, width: int) -> torch.Tensor:
        return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(height * width))

    example = image(2, base + 1, base + stride // 2 + 2)
    try:
        with torch.inference_mode():
            model(example)
    except (RuntimeError, AssertionError, ValueError):  # e.g. a ViT without dynamic image size: timm asserts
        fixed: list[int | str] = ["batch", channels, side, side]
        return _Inputs(image(2, side, side), [image(3, side, side), image(1, side, side)], fixed)
    checks = [image(3, base + stride, base), image(1, base + 3, base + stride + 5)]
    return _Inputs(example, checks, ["batch", channels, "height", "width"])


def _output_shape(model: nn.Module, input_shape: list[int | str]) -> list[int | str]:
    hparams = getattr(model, "hparams", {})
    classes = len(getattr(model, "class_names", []) or []) or int(hparams.get("num_classes", 0))
    if hasattr(model, "predict_logits"):  # a segmenter: logits per pixel
        return ["batch", classes, *input_shape[2:]]
    return ["batch", classes]


def _check(run: Callable[[torch.Tensor], Any], model: nn.Module, inputs: _Inputs) -> dict[str, Any]:
    """Compare the exported model with PyTorch on the check inputs; the largest deviation as an ``export`` record."""
    worst = 0.0
    for image in inputs.checks:
        with torch.inference_mode():
            reference, exported = model(image), torch.as_tensor(run(image))
        if exported.shape != reference.shape:
            raise RuntimeError(f"exported output {list(exported.shape)} != PyTorch {list(reference.shape)}")
        difference = float((exported - reference).abs().max())
        if difference > TOLERANCE * max(1.0, float(reference.abs().max())):
            raise RuntimeError(
                f"the exported model differs from PyTorch by {difference:.3g} on an input of shape "
                f"{list(image.shape)}; nothing was written"
            )
        worst = max(worst, difference)
    return {"input_shapes": [list(image.shape) for image in inputs.checks], "max_abs_diff": worst}


def _onnx_session(model: str | bytes) -> Any:
    try:
        import onnxruntime  # an optional dependency, loaded only by ONNX export
    except ImportError as error:
        raise ImportError("ONNX export needs the export extra: pip install 'smalldata_pl[export]'") from error
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def _write_onnx(
    model: nn.Module, inputs: _Inputs, preprocessing: dict[str, Any], record: dict[str, Any], out: Path
) -> None:
    # torch.export's exporter (the default): Dim.DYNAMIC leaves each free axis symbolic without asking the model's
    # shape arithmetic (pad to stride, crop back) to fit a declared range, which it cannot express.
    free = torch.export.Dim.DYNAMIC
    axes = {0: free} | ({2: free, 3: free} if "height" in inputs.shape else {})
    try:
        program = torch.onnx.export(
            model,
            (inputs.example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(axes,),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except ImportError as error:
        raise ImportError("ONNX export needs the export extra: pip install 'smalldata_pl[export]'") from error
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    record["opset"] = next(o.version for o in proto.opset_import if o.domain == "")
    session = _onnx_session(proto.SerializeToString())
    record["check"] = _check(lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0], model, inputs)
    for key, value in ((PREPROCESSING_KEY, preprocessing), (EXPORT_KEY, record)):
        proto.metadata_props.add(key=key, value=json.dumps(value))
    out.write_bytes(proto.SerializeToString())


def _write_torchscript(
    model: nn.Module, inputs: _Inputs, preprocessing: dict[str, Any], record: dict[str, Any], out: Path
) -> None:
    # torch.jit.trace probes every attribute; LightningModule.trainer raises outside a Trainer unless this flag
    # (what Lightning's own, deprecated to_torchscript sets) is on, in every task module an ensemble holds too.
    for module in model.modules():
        if isinstance(module, LightningModule):
            module._jit_is_scripting = True
    with warnings.catch_warnings():
        # TorchScript is deprecated in PyTorch (the caller asked for it); the segmenter's `if pad` is frozen to the
        # traced branch, which _check proves right for other sizes; torchmetrics warns on the probing.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "`torch.jit.", FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        traced = torch.jit.trace(model, inputs.example, check_trace=False)
        record["check"] = _check(traced, model, inputs)
        files = {f"{PREPROCESSING_KEY}.json": json.dumps(preprocessing), f"{EXPORT_KEY}.json": json.dumps(record)}
        torch.jit.save(traced, out, _extra_files=files)
