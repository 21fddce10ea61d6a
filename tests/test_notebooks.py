"""The notebooks run top to bottom (through nbmake, in a subprocess) with the quick settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook: Path, tmp_path: Path):
    env = os.environ | {
        "WSSS_NOTEBOOK_QUICK": "1",
        "WSSS_NOTEBOOK_DIR": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MPLBACKEND": "Agg",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            "--nbmake-timeout=300",
            "-q",
            "-p",
            "no:cacheprovider",
            str(notebook),
        ],
        cwd=notebook.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{notebook.name} failed:\n{done.stdout[-6000:]}"
