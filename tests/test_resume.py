"""Resume: a fit killed mid-epoch (SIGKILL) continues from ``last.ckpt`` to the uninterrupted step count."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from wsss.main import main
from wsss.resume import find_last_checkpoint, resume_args, run_directory
from wsss.resume import main as resume

ROOT = Path(__file__).parents[1]
RECIPE = str(ROOT / "recipes" / "cam_baseline_synthetic.yaml")
STEPS_PER_EPOCH, EPOCHS, KILL_AT_STEP = 4, 2, 3  # killed in epoch 0, after the checkpoint of step 2


class HangAtStep(L.Callback):
    """Write ``marker`` and block after optimiser step ``step``, for the parent to SIGKILL the run there."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        """Block forever once ``global_step`` reaches ``step`` (checkpoints of earlier steps are on disk)."""
        if trainer.global_step == self.step:
            self.marker.touch()
            while True:
                time.sleep(1)


def callbacks_config(path: Path, *extra: dict) -> Path:
    """A config file whose callbacks are a step-wise ``ModelCheckpoint(save_last=True)`` and ``extra``."""
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_last": True, "every_n_train_steps": 2},
    }
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [checkpoint, *extra]}}))
    return path


def fit_args(tiny_fit_args: list[str], root: Path, callbacks: Path) -> list[str]:
    """Tiny fit arguments of ``EPOCHS`` epochs of ``STEPS_PER_EPOCH`` steps, logging into ``root``."""
    return [
        "--config",
        RECIPE,
        "--config",
        str(callbacks),
        *tiny_fit_args,
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_epochs={EPOCHS}",
        f"--trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "--data.init_args.batch_size=4",
    ]


def checkpoint_state(path: Path) -> tuple[int, int, float]:
    """(global step, schedule step, learning rate of the first parameter group) of a checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    return (
        state["global_step"],
        state["lr_schedulers"][0]["last_epoch"],
        state["optimizer_states"][0]["param_groups"][0]["lr"],
    )


def test_run_directory_follows_configs_and_overrides(tmp_path: Path):
    assert run_directory(["--config", RECIPE]) == Path("runs/cam_baseline_synthetic")
    other = tmp_path / "other.yaml"
    other.write_text("trainer: {default_root_dir: elsewhere}\n")
    assert run_directory(["--config", RECIPE, "--config", str(other)]) == Path("elsewhere")
    assert run_directory(["--config", RECIPE, "--trainer.default_root_dir", "x"]) == Path("x")
    assert run_directory([]) == Path.cwd()


def test_newest_last_checkpoint_wins_and_absence_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint \(checkpoints/\*.ckpt\) below .*save_last"):
        find_last_checkpoint(tmp_path)
    old, new = (tmp_path / f"lightning_logs/version_{i}/checkpoints/last.ckpt" for i in (0, 1))
    for i, path in enumerate((new, old)):
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": {}, "loops": {}, "optimizer_states": []}, path)
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    assert find_last_checkpoint(tmp_path) == old
    args = resume_args(["--config", RECIPE, f"--trainer.default_root_dir={tmp_path}"])
    assert args[0] == "fit" and args[-1] == f"--ckpt_path={old}"
    with pytest.raises(ValueError, match="finds the checkpoint itself"):
        resume_args(["--config", RECIPE, "--ckpt_path=x.ckpt"])


def test_sigkilled_fit_resumes_to_the_uninterrupted_step_count(tmp_path: Path, tiny_fit_args: list[str]):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    plain = callbacks_config(tmp_path / "plain.yaml")
    main(["fit", *fit_args(tiny_fit_args, reference_dir, plain)])
    reference = checkpoint_state(find_last_checkpoint(reference_dir))
    assert reference[0] == EPOCHS * STEPS_PER_EPOCH

    marker = tmp_path / "hanging"
    hang = {
        "class_path": "test_resume.HangAtStep",
        "init_args": {"step": KILL_AT_STEP, "marker": str(marker)},
    }
    hanging = callbacks_config(tmp_path / "hang.yaml", hang)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "wsss", "fit", *fit_args(tiny_fit_args, killed_dir, hanging)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the run ended before step {KILL_AT_STEP}:\n{child.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "the run never reached the step where it is killed"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    interrupted = checkpoint_state(find_last_checkpoint(killed_dir))
    assert interrupted[0] == 2, "the last checkpoint before the kill is the one of step 2, mid-epoch 0"

    resume(fit_args(tiny_fit_args, killed_dir, plain))
    resumed = checkpoint_state(find_last_checkpoint(killed_dir))
    assert resumed[0] == reference[0] and resumed[1] == reference[1], "same optimiser and schedule step count"
    assert resumed[2] == pytest.approx(reference[2])
