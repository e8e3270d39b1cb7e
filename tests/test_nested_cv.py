import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tensorboard_scalars, write_manifest_config

from smalldata_pl.cli import main
from smalldata_pl.cli.nested_cv import NestedCrossValidationOptions
from smalldata_pl.cli.options import listed_values
from smalldata_pl.datasets.splits import fold_indices
from smalldata_pl.evaluation.nested_cv import candidates_from_files, restrict

# Two candidates that differ in training only: a learning rate too small to move the model, and a usable one.
FROZEN = (
    "model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.SGD\n      init_args:\n        lr: 1.0e-9\n"
)
ADAMW = (
    "model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.AdamW\n      init_args:\n        lr: 0.01\n"
)


def _outer_validation(manifest: Path, k: int) -> dict[str, str]:
    """File name -> group of outer fold k's validation images, drawn independently of the code under test."""
    rows = list(csv.DictReader(manifest.open()))
    labels = [["ferrite", "pearlite"].index(r["label"]) for r in rows]
    _, val = fold_indices(labels, [r["group"] for r in rows], 2, k, "stratified_group", seed=0)
    return {Path(rows[i]["file"]).name: rows[i]["group"] for i in val}


def test_nested_cv_chooses_on_inner_folds_scores_outside_and_resumes(tmp_path, grouped_manifest, capsys):
    config = write_manifest_config(
        tmp_path / "base.yaml", grouped_manifest, max_epochs=1, num_folds=2, leakage_check='"off"'
    )
    (tmp_path / "frozen.yaml").write_text(FROZEN)
    (tmp_path / "adamw.yaml").write_text(ADAMW)
    cv_dir = tmp_path / "nested"
    args = ["nested-cv", "-c", str(config), "--candidates", str(tmp_path / "frozen.yaml"), str(tmp_path / "adamw.yaml")]
    args += ["--inner_folds", "2", "--cv_dir", str(cv_dir)]
    main(args)
    printed = capsys.readouterr().out
    report = json.loads((cv_dir / "nested_cv.json").read_text())
    assert report["metric"] == "val/loss" and report["mode"] == "min"  # the checkpoint's monitor by default
    assert "nested estimate" in printed and "optimistic" in printed

    group_of = {Path(r["file"]).name: r["group"] for r in csv.DictReader(grouped_manifest.open())}
    for fold in report["folds"]:
        k = fold["outer_fold"]
        outer_val = _outer_validation(grouped_manifest, k)
        inner_val: dict[str, list[set[str]]] = {}
        for candidate in ("frozen", "adamw"):
            for j in range(2):
                run = json.loads((cv_dir / f"outer_{k}" / candidate / f"inner_{j}.json").read_text())
                seen = {Path(f).name for f in run["train_files"] + run["val_files"]}
                assert seen and not seen & set(outer_val)  # no outer-validation image in any inner split
                assert not {group_of[f] for f in seen} & set(outer_val.values())  # nor one of its groups
                inner_val.setdefault(candidate, []).append({Path(f).name for f in run["val_files"]})
        # The inner validation folds cover the outer training fold once, identically for every candidate.
        assert inner_val["frozen"] == inner_val["adamw"]
        assert sorted(f for part in inner_val["frozen"] for f in part) == sorted(set(group_of) - set(outer_val))

        # The chosen candidate is the one with the best mean inner val/loss, read back from TensorBoard.
        inner_loss = {
            c: np.mean(
                [tensorboard_scalars(cv_dir / f"outer_{k}" / c / f"inner_{j}")["val/loss"][-1] for j in range(2)]
            )
            for c in ("frozen", "adamw")
        }
        assert fold["chosen"] == min(inner_loss, key=inner_loss.get)
        assert fold["inner"][fold["chosen"]]["mean"] == pytest.approx(inner_loss[fold["chosen"]], abs=1e-5)

        # The outer score is the chosen candidate retrained on the whole outer training fold.
        outer_run = cv_dir / f"outer_{k}" / fold["chosen"] / "outer"
        outer_json = json.loads(outer_run.with_suffix(".json").read_text())
        assert {Path(f).name for f in outer_json["val_files"]} == set(outer_val)
        assert len(outer_json["train_files"]) == len(group_of) - len(outer_val)
        final_acc = tensorboard_scalars(outer_run)["val/acc"][-1]
        assert fold["outer"][fold["chosen"]]["val/acc"] == pytest.approx(final_acc, abs=1e-5)
        assert report["nested"]["folds"][f"outer_{k}"]["val/acc"] == pytest.approx(final_acc, abs=1e-5)
        assert list(outer_run.glob("checkpoints/last.ckpt"))  # the outer fold models are kept

    nested_acc = [report["nested"]["folds"][f"outer_{k}"]["val/acc"] for k in range(2)]
    assert report["nested"]["metrics"]["val/acc"]["mean"] == pytest.approx(np.mean(nested_acc))
    assert set(report["reference"]) == {"frozen", "adamw"}  # each candidate's plain outer CV beside it
    assert report["best_by_outer_scores"] in {"frozen", "adamw"}
    table = list(csv.DictReader((cv_dir / "nested_cv.csv").open()))
    assert [row["chosen"] for row in table] == [fold["chosen"] for fold in report["folds"]]
    summary = list(csv.DictReader((cv_dir / "nested_cv_summary.csv").open()))
    assert {row["estimate"] for row in summary} == {
        "nested: chosen by inner CV",
        "plain outer CV: frozen",
        "plain outer CV: adamw",
    }
    inner_settings = json.loads((cv_dir / "outer_0" / "frozen" / "inner_1" / "settings.json").read_text())
    assert inner_settings["data.fold"] == 1  # the logged settings name the inner fold that was trained
    split = list(csv.DictReader((cv_dir / "outer_0" / "split.csv").open()))
    assert len(split) == len(group_of)

    # Rerunning trains only what is missing: here one inner run whose result file was lost.
    results = sorted(cv_dir.glob("outer_*/*/*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    lost = cv_dir / "outer_1" / "adamw" / "inner_0.json"
    lost.unlink()
    main(args)
    redone = [p for p in results if p.stat().st_mtime_ns != stamps[p]]
    assert redone == [lost]
    assert json.loads((cv_dir / "nested_cv.json").read_text())["folds"] == report["folds"]


def test_candidates_are_listed_checked_and_named(tmp_path):
    def listed_candidates(argv: list[str]) -> list[str]:
        return listed_values(argv, NestedCrossValidationOptions)

    assert listed_candidates(["-c", "x.yaml", "--candidates", "a.yaml", "b.yaml", "--inner_folds", "2"]) == [
        "-c",
        "x.yaml",
        '--candidates=["a.yaml", "b.yaml"]',
        "--inner_folds",
        "2",
    ]
    assert listed_candidates(["--candidates", "[a.yaml, b.yaml]"]) == ["--candidates=[a.yaml, b.yaml]"]
    (tmp_path / "one").mkdir()
    for path in (tmp_path / "a.yaml", tmp_path / "one" / "a.yaml"):
        path.write_text(FROZEN)
    with pytest.raises(ValueError, match="at least two"):
        candidates_from_files([tmp_path / "a.yaml"])
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml does not exist"):
        candidates_from_files([tmp_path / "a.yaml", tmp_path / "missing.yaml"])
    with pytest.raises(ValueError, match="share the name 'a'"):
        candidates_from_files([tmp_path / "a.yaml", tmp_path / "one" / "a.yaml"])
    with pytest.raises(TypeError, match="lists its images in `records`"):
        restrict(object(), [], 2, 0)  # e.g. a procedural DataModule: nothing to split


def test_a_candidate_that_changes_which_images_are_used_is_refused(tmp_path, grouped_manifest):
    config = write_manifest_config(
        tmp_path / "base.yaml", grouped_manifest, max_epochs=1, num_folds=2, leakage_check='"off"'
    )
    (tmp_path / "reseeded.yaml").write_text("data:\n  init_args:\n    seed: 7\n")
    (tmp_path / "frozen.yaml").write_text(FROZEN)
    args = [
        "nested-cv",
        "-c",
        str(config),
        "--candidates",
        str(tmp_path / "reseeded.yaml"),
        str(tmp_path / "frozen.yaml"),
    ]
    with pytest.raises(ValueError, match="candidate reseeded .* splits inner fold 0 of outer fold 0 differently"):
        main([*args, "--inner_folds", "2", "--cv_dir", str(tmp_path / "nested")])
    assert not list((tmp_path / "nested").glob("outer_*/*/*.json"))  # refused before anything was trained
