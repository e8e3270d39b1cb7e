"""Grad-CAM maps of a classifier's last backbone stage (captum), and heat-map overlays of them."""

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn


def last_stage_layer(model: nn.Module) -> nn.Module:
    """The module that computes the last backbone stage, found from the model's ``stage*`` parameter group.

    The group's parameter names share a module prefix (``backbone.layer4`` for a ResNet). When the group spans
    several sibling modules (an EfficientNet's last blocks plus ``conv_head`` and ``bn2``), the last registered
    of them is taken: its output is the final feature map.

    Raises:
        ValueError: If the model has no ``param_groups`` with a ``stage*`` group.
    """
    groups: dict[str, list[str]] = getattr(model, "param_groups", None) or {}
    stages = [name for name in groups if name.startswith("stage") and groups[name]]
    if not stages:
        raise ValueError(
            f"{type(model).__name__} has no `stage*` parameter group (groups: {list(groups)}), so its last backbone "
            "stage for Grad-CAM is unknown; pass the layer explicitly"
        )
    modules = [name.rpartition(".")[0].split(".") for name in groups[stages[-1]]]
    prefix: list[str] = []
    for parts in zip(*modules, strict=False):
        if len(set(parts)) > 1:
            break
        prefix.append(parts[0])
    parent = model.get_submodule(".".join(prefix))
    used = {m[len(prefix)] for m in modules if len(m) > len(prefix)}
    children = [child for name, child in parent.named_children() if name in used]
    return children[-1] if len(used) > 1 and children else parent


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
    height, width = images.shape[-2:]
    explainer = LayerGradCam(model, layer or last_stage_layer(model))
    with torch.enable_grad():  # Grad-CAM needs gradients even when the caller predicts without them
        attribution = explainer.attribute(
            images.detach().clone().to(device), target=int(target_class), relu_attributions=True
        )
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
