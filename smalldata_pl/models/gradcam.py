"""Grad-CAM maps of a classifier (captum's LayerGradCam on the backbone's last spatial stage) and their overlays."""

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn


def stage_layers(model: nn.Module) -> list[nn.Module]:
    """The module computing each ``stage*`` parameter group of the model, last stage first.

    For each group the outermost module whose parameters all belong to it is taken (``backbone.layer4`` of a
    ResNet). When a group spans several sibling modules (an EfficientNet's last blocks plus ``conv_head`` and
    ``bn2``), the last registered of them is taken: its output is the group's final output.

    Raises:
        ValueError: If the model has no ``param_groups`` with a ``stage*`` group.
    """
    groups: dict[str, list[str]] = getattr(model, "param_groups", None) or {}
    stages = [name for name in groups if name.startswith("stage") and groups[name]]
    if not stages:
        raise ValueError(
            f"{type(model).__name__} has no `stage*` parameter group (groups: {list(groups)}), so its backbone "
            "stages for Grad-CAM are unknown; pass the layer explicitly"
        )
    return [model.get_submodule(".".join(_group_module(model, set(groups[name])))) for name in reversed(stages)]


def _group_module(model: nn.Module, params: set[str]) -> list[str]:
    modules = [name.split(".")[:-1] for name in params]

    def owned(path: list[str]) -> bool:
        qualifier = "".join(f"{p}." for p in path)
        own = {qualifier + name for name, _ in model.get_submodule(".".join(path)).named_parameters()}
        return bool(path) and own <= params

    path: list[str] = []
    for parts in zip(*modules, strict=False):  # the deepest module holding every parameter of the group
        if len(set(parts)) > 1:
            break
        path.append(parts[0])
    while not owned(path):  # the group spans siblings: descend into the last registered one it uses
        used = {m[len(path)] for m in modules if m[: len(path)] == path and len(m) > len(path)}
        children = [name for name, _ in model.get_submodule(".".join(path)).named_children() if name in used]
        if not children:
            break
        path.append(children[-1])
    while len(path) > 1 and owned(path[:-1]):  # a block of the stage: climb to the whole stage
        path = path[:-1]
    return path


def last_stage_layer(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """The last backbone stage whose output is a spatial feature map ``[N, C, h, w]`` for ``images``.

    Stages after the last convolutional one, such as a ConvNeXt's pooled head norm, are skipped.

    Raises:
        ValueError: If no stage outputs a spatial map (a vision transformer's tokens, for instance).
    """
    candidates = stage_layers(model)
    dims: dict[int, int] = {}
    hooks = [
        layer.register_forward_hook(lambda m, _, out: dims.__setitem__(id(m), getattr(out, "ndim", 0)))
        for layer in candidates
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    for layer in candidates:
        if dims.get(id(layer)) == 4:
            return layer
    raise ValueError(
        f"no backbone stage of {type(model).__name__} outputs a spatial feature map [N, C, h, w], which Grad-CAM "
        "needs; explain convolutional backbones (ResNet, EfficientNet, ConvNeXt …)"
    )


def gradcam(
    model: nn.Module, image_tensor: torch.Tensor, target_class: int, layer: nn.Module | None = None
) -> np.ndarray:
    """Grad-CAM of ``target_class`` for one image, upsampled to the image's size and scaled to [0, 1].

    Uses captum's ``LayerGradCam`` on :func:`last_stage_layer` (positive evidence only: ReLU of the
    gradient-weighted feature maps). A map without positive evidence is all zeros.

    Args:
        model: A classifier returning ``[N, K]`` logits, in eval mode.
        image_tensor: One preprocessed image ``[C, H, W]`` (or ``[1, C, H, W]``) as the model takes it.
        target_class: The class whose score is explained.
        layer: The layer to explain instead of the last backbone stage.

    Returns:
        ``[H, W]`` float32 map in [0, 1].
    """
    images = image_tensor if image_tensor.ndim == 4 else image_tensor[None]
    if images.shape[0] != 1:
        raise ValueError(f"gradcam explains one image at a time, got a batch of {images.shape[0]}")
    device = next(model.parameters()).device
    images = images.detach().clone().to(device)
    height, width = images.shape[-2:]
    explainer = LayerGradCam(model, layer or last_stage_layer(model, images))
    with torch.enable_grad():  # Grad-CAM needs gradients even when the caller predicts without them
        attribution = explainer.attribute(images, target=int(target_class), relu_attributions=True)
    assert isinstance(attribution, torch.Tensor)
    upsampled = F.interpolate(attribution.detach().float(), size=(height, width), mode="bilinear", align_corners=False)
    cam = upsampled[0, 0].clamp(min=0).cpu().numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)


def heatmap_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image in grey with the map blended in as a colour heat map (inferno), as ``uint8`` RGB.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` image in [0, 1].
        cam: ``(H, W)`` map in [0, 1] of the same size.
        alpha: Weight of the heat map.
    """
    import matplotlib

    if cam.shape != image.shape[:2]:
        raise ValueError(f"map of shape {cam.shape} does not match the image's {image.shape[:2]}")
    grey = image if image.ndim == 2 else image[:, :, :3].mean(axis=2)
    heat = matplotlib.colormaps["inferno"](np.clip(cam, 0, 1))[:, :, :3]
    blended = (1 - alpha) * np.repeat(grey[:, :, None], 3, axis=2) + alpha * heat
    return (blended * 255).round().clip(0, 255).astype(np.uint8)
