"""Start a whole network (backbone, decoder, head) from a trained checkpoint, e.g. a synthetic-data model."""

from collections.abc import Iterable
from pathlib import Path

from torch import nn

from smalldata_pl.models.checkpoint_files import read_checkpoint
from smalldata_pl.models.weights import WeightLoadReport


def load_network_weights(
    model: nn.Module, path: str | Path, submodules: Iterable[str], head: str = "head"
) -> WeightLoadReport:
    """Copy the tensors of ``model``'s ``submodules`` from the same names in ``path``.

    The file is a checkpoint of this framework (its ``state_dict``) or a plain state dict. Only the named
    submodules (parameters and BatchNorm statistics of e.g. ``encoder``, ``decoder``, ``head``) are touched:
    the task's own settings such as class weights and its metrics stay as configured. Every tensor must be
    there with its shape except the ``head``'s, which may be for another class count and then stays fresh
    (listed in the report's ``kept_fresh``): a backbone or decoder loaded in part would silently keep random
    weights.

    Args:
        model: The network to initialise.
        path: Checkpoint (``.ckpt``) or state-dict file.
        submodules: Top-level submodule names whose tensors are loaded.
        head: The submodule allowed to differ.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If a tensor outside the head is missing from the file or has another shape there (another
            backbone, or not a weights file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"init_weights file {path} does not exist; give a trained checkpoint or null")
    stored = read_checkpoint(path)
    weights = stored.get("state_dict", stored) if isinstance(stored, dict) else {}
    prefixes = tuple(f"{name}." for name in submodules)
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    fits = {k: weights[k] for k in target if k in weights and weights[k].shape == target[k].shape}
    unfit = [k for k in target if k not in fits and not k.startswith(f"{head}.")]
    if unfit:
        raise ValueError(
            f"{path} does not hold {len(unfit)} of the {len(target)} tensors of {type(model).__name__} outside its "
            f"{head} with their shapes (e.g. {unfit[:3]}); init_weights needs a checkpoint of the same task and "
            "backbone"
        )
    model.load_state_dict(fits, strict=False)
    fresh = [k for k in target if k not in fits]
    return WeightLoadReport(str(path), len(fits), len(target), kept_fresh=fresh, part="network")
