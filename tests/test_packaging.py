"""Packaging: declared dependencies match the imports, and the built wheel carries everything the package needs."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    result = subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def package_files() -> list[str]:
    """Files under smalldata_pl/ that git tracks or would add (untracked but not ignored), as repo-relative paths."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "smalldata_pl"], REPO).stdout
    return sorted(path for path in listed.splitlines() if (REPO / path).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources, so the build leaves nothing behind in the repository."""
    source = tmp_path_factory.mktemp("source")
    for path in ["pyproject.toml", "README.md", *package_files()]:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, source / path)
    out = tmp_path_factory.mktemp("wheel")
    # Offline: setuptools from this venv (the dev extra), no index, no dependencies.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        source,
    )
    (built,) = out.glob("smalldata_pl-*.whl")
    return built


def test_deptry_finds_no_issues() -> None:
    result = run([str(BIN / "deptry"), "."], REPO)
    assert "No dependency issues found" in result.stdout + result.stderr


def test_wheel_contains_every_package_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    files = package_files()
    # Data files live beside the code that reads them; the two that exist now must be among those checked.
    assert {"smalldata_pl/py.typed", "smalldata_pl/generators/phases_cu_ka.csv"} <= set(files)
    missing = [path for path in files if path not in names]
    assert not missing, f"not in {wheel.name}: {missing}"


@pytest.mark.slow
def test_installed_wheel_works_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), str(wheel)],
        tmp_path,
    )
    code = (
        "import smalldata_pl\n"
        "from smalldata_pl.datamodules import SyntheticSpectra\n"
        "from smalldata_pl.datasets.uhcs3 import UHCS3_MANIFEST\n"
        "dm = SyntheticSpectra(train_size=4, val_size=2, test_size=2)\n"
        "dm.setup('fit')\n"
        "print(smalldata_pl.__file__)\n"
        "print(UHCS3_MANIFEST.is_file())\n"
        "print(tuple(dm.train_dataset[0]['spectrum'].shape))\n"
    )
    # cwd and PYTHONPATH hold only the installed copy; the dependencies come from this venv's site-packages.
    result = run([sys.executable, "-c", code], tmp_path, PYTHONPATH=str(site))
    package_init, manifest_found, shape = result.stdout.splitlines()
    assert Path(package_init).is_relative_to(site)
    assert manifest_found == "True"
    assert shape == "(1, 2048)"
