import csv
from pathlib import Path

import pytest
from conftest import write_manifest_config

from smalldata_pl.cli import main

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


@pytest.mark.slow
def test_study_writes_curve_and_resumes_without_redoing_points(tmp_path, grouped_manifest):
    config = tmp_path / "study.yaml"
    write_manifest_config(config, grouped_manifest, max_epochs=1, num_folds=2, leakage_check='"off"')
    out = tmp_path / "study"
    args = [
        "study",
        "-c",
        str(config),
        "--sizes",
        "2,all",
        "--strategies",
        "scratch,staged",
        "--repeats",
        "2",
        "--folds",
        "1",
        "--plan",
        "[0]",
        "--staged_args",
        '{"lr_decay": 0.5}',
        "--out",
        str(out),
    ]
    main(args)
    rows = list(csv.DictReader((out / "results.csv").open()))
    # 2 sizes x 2 strategies; the subsampled size repeats twice, 'all' once
    assert len(rows) == 2 * 2 + 2 * 1
    assert {r["per_class"] for r in rows} == {"2", "all"}
    assert (out / "curve.png").stat().st_size > 0
    assert "staged" in (out / "summary.md").read_text()
    points = sorted((out / "points").glob("*.json"))
    stamps = {p.name: p.stat().st_mtime_ns for p in points}
    points[0].unlink()  # as if the study had been interrupted before this point finished
    main(args)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    assert set(after) == set(stamps)
    redone = [name for name in after if after[name] != stamps.get(name)]
    assert redone == [points[0].name]


def test_unknown_strategy_is_named():
    # The study parses the whole training config first, so a valid one is given to reach the strategy check.
    with pytest.raises(ValueError, match=r"unknown strategies \['magic'\]") as error:
        main(["study", "-c", SMOKE, "--strategies", "staged,magic"])
    message = str(error.value)
    assert "'staged'" not in message.split(";")[0]  # only the bad name is reported as unknown
    assert all(name in message for name in ("scratch", "linear_probe", "staged_aug"))  # the choices are listed


def test_shards_split_the_points_without_overlap_or_gaps():
    from smalldata_pl.evaluation.study import study_points

    points = study_points(["staged", "linear_probe"], [5, None], repeats=2, folds=3)
    assert len(points) == 2 * 2 * 3 + 2 * 1 * 3  # the full set is drawn once, not per repeat
    shards = [points[i::4] for i in range(4)]
    assert sorted(map(str, (p for shard in shards for p in shard))) == sorted(map(str, points))
    with pytest.raises(ValueError, match="--shard"):
        main(["study", "-c", SMOKE, "--shard", "4/4"])
