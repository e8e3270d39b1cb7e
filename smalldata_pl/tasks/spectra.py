"""SpectrumClassifier: a small 1-D CNN for diffraction or Raman patterns, with the same named groups."""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MultilabelF1Score
from typing_extensions import override

from smalldata_pl.models.spectrum_cnn import SpectrumCNN
from smalldata_pl.tasks.base import TransferModule, default_class_names


class SpectrumClassifier(TransferModule):
    """Phase identification from 1-D patterns: ``single`` (dominant phase) or ``multilabel`` (all present).

    Groups ``stem``, ``stage1`` … ``head`` work with StagedUnfreezing, and ``pretrained`` loads an encoder
    saved from a synthetic pre-training run.

    Args:
        num_classes: Number of phases (linked from the DataModule).
        class_names: Phase names (linked).
        in_chans: Input channels (linked).
        task: ``single`` or ``multilabel``.
        widths: CNN widths.
        pretrained: ``False`` or a weights file for the encoder.
        drop_rate: Dropout before the head.
        **kwargs: Optimizer, scheduler and warm-up options of :class:`TransferModule`.
    """

    def __init__(
        self,
        num_classes: int = 3,
        class_names: Sequence[str] | None = None,
        in_chans: int = 1,
        task: str = "single",
        widths: Sequence[int] = (32, 64, 128, 256),
        pretrained: bool | str = False,
        drop_rate: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if task not in ("single", "multilabel"):
            raise ValueError(f"task must be 'single' or 'multilabel', got {task!r}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.task = task
        self.class_names = default_class_names(class_names, num_classes)
        self.backbone: Any = SpectrumCNN(in_chans, widths)
        if isinstance(pretrained, str) and pretrained:
            from smalldata_pl.models.weights import load_backbone_weights, resolve_weights

            weights = resolve_weights("spectrum_cnn", pretrained).state_dict or {}
            load_backbone_weights(self.backbone, weights, pretrained)
        self.head: Any = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.backbone.num_features, num_classes))
        self.param_groups = {
            **{k: [f"backbone.{p}" for p in v] for k, v in self.backbone.layer_groups().items()},
            "head": [f"head.{n}" for n, _ in self.head.named_parameters()],
        }
        if task == "single":
            metrics = MetricCollection(
                {
                    "acc": MulticlassAccuracy(num_classes, average="micro"),
                    "f1": MulticlassF1Score(num_classes, average="macro"),
                }
            )
        else:
            metrics = MetricCollection({"f1": MultilabelF1Score(num_classes, average="macro")})
        # Keys carry a suffix because "train" is a Module method.
        self.metrics: Any = nn.ModuleDict({f"{s}_": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})

    @override
    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(spectra))

    @override
    def training_loss(self, batch: dict) -> torch.Tensor:
        logits = self(batch["spectrum"])
        if self.task == "single":
            return F.cross_entropy(logits, batch["label"])
        return F.binary_cross_entropy_with_logits(logits, batch["labels"])

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self(batch["spectrum"])
        if self.task == "single":
            loss = F.cross_entropy(logits, batch["label"])
            self.metrics[f"{split}_"].update(logits, batch["label"])
        else:
            loss = F.binary_cross_entropy_with_logits(logits, batch["labels"])
            self.metrics[f"{split}_"].update(logits.sigmoid(), batch["labels"].long())
        self.log_loss(split, loss, len(logits))
        self.log_dict(self.metrics[f"{split}_"], on_step=False, on_epoch=True)
        return loss

    @override
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    @override
    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    @override
    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self(batch["spectrum"])
        scores = logits.softmax(dim=1) if self.task == "single" else logits.sigmoid()
        return {"probabilities": scores, "prediction": scores.argmax(dim=1), "group": batch["group"]}
