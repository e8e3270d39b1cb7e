"""New layers trained on top of a pretrained backbone."""

from torch import nn


class ClassificationHead(nn.Sequential):
    """Dropout then a linear layer from pooled backbone features to class logits.

    Args:
        in_features: Width of the pooled features.
        num_classes: Number of classes.
        drop_rate: Dropout probability before the linear layer (strong regularisation helps with few images).
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.2) -> None:
        super().__init__(nn.Dropout(drop_rate), nn.Linear(in_features, num_classes))
