"""Long commands say which run of how many is starting and how long the rest will take at the pace so far."""

from smalldata_pl.evaluation import progress as progress_module
from smalldata_pl.evaluation.progress import RunProgress


def test_progress_lines_count_runs_and_estimate_the_time_left(capsys, monkeypatch):
    clock = iter([0.0, 0.0, 120.0, 400.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    progress = RunProgress("fold", 3)
    progress.starting(0)
    progress.finished()
    progress.starting(1, "fold_1")
    progress.finished()
    progress.starting(2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "fold 1/3: 0 s elapsed"
    assert lines[1] == "fold 2/3 (fold_1): 2 min 0 s elapsed, about 4 min 0 s left"
    assert lines[2] == "fold 3/3: 6 min 40 s elapsed, about 3 min 20 s left"
