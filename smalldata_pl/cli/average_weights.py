"""``smalldata average-weights``: a fine-tuned network averaged with its start, weight by weight (WiSE-FT)."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.models.weight_averaging import average_checkpoints


@dataclass
class AverageWeightsOptions:
    """Options of ``smalldata average-weights``.

    Args:
        start: The checkpoint the fine-tune started from (its ``init_weights``).
        tuned: The fine-tuned checkpoint (fitted with the start's BatchNorm statistics kept).
        alpha: The fine-tune's weight, in (0, 1]. 0.75 was best on the superalloy validation images with one real
            image; with two, the fine-tune alone (1.0) was. Choose yours on validation images.
        out: The checkpoint to write; ``apply``, ``validate`` and ``test`` take it as they take ``tuned``.
    """

    start: str
    tuned: str
    alpha: float = 0.75
    out: str = "averaged.ckpt"


def average_weights_command(argv: Sequence[str]) -> Path:
    """``smalldata average-weights START TUNED [--alpha 0.75] [--out averaged.ckpt]``."""
    parser = command_parser(
        "smalldata average-weights",
        "Average a fine-tuned checkpoint with the checkpoint it started from, weight by weight, to keep what the "
        "start knew when the fine-tune saw one or two real images.",
        AverageWeightsOptions,
        ["start", "tuned"],
    )
    options = parse_options(parser, AverageWeightsOptions, argv)
    out = average_checkpoints(Path(options.start), Path(options.tuned), options.alpha, Path(options.out))
    print(f"wrote {out}: {options.alpha:g} x {options.tuned} + {1 - options.alpha:g} x {options.start}")
    return out
