"""Checkpoints on a full disk: the old ``last.ckpt`` stays whole, the error names the folder, resume goes on.

The real case needs a file system smaller than the checkpoint, on another device than the system's temp folder
(Lightning's own writer copied its temporary file into the final name there): a tiny tmpfs, mounted when the
tests run as root. Elsewhere a write that raises ENOSPC halfway stands in for it.
"""

import errno
import os
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from wsss.atomic import atomic_write
from wsss.checkpointing import AtomicCheckpointIO, checkpoint_problem
from wsss.main import main, make_cli
from wsss.resume import find_last_checkpoint
from wsss.resume import main as resume

ROOT = Path(__file__).parents[1]
RECIPE = str(ROOT / "recipes" / "cam_baseline_synthetic.yaml")


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    """A 128 MiB tmpfs mounted at ``tmp_path/disk`` (root only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    command = ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(disk)]
    mounted = subprocess.run(command, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with a file until only ``leave`` bytes are free; returns the file."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb") as file:
        file.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
    return filler


def state(value: float, size: int = 1_000_000) -> dict:
    """A small full training checkpoint whose weights are all ``value``."""
    return {"state_dict": {"w": torch.full((size,), value)}, "loops": {}, "optimizer_states": []}


def cli_checkpoint_io(tiny_fit_args: list[str], root: Path):
    """The checkpoint IO of the trainer that ``wsss fit`` builds."""
    cli = make_cli(["--config", RECIPE, *tiny_fit_args, f"--trainer.default_root_dir={root}"], run=False)
    return cli.trainer.strategy.checkpoint_io


def test_cli_writes_checkpoints_atomically_so_a_full_disk_keeps_the_old_one(tiny_disk, tiny_fit_args):
    checkpoint_io = cli_checkpoint_io(tiny_fit_args, tiny_disk)
    assert isinstance(checkpoint_io, AtomicCheckpointIO)
    last = tiny_disk / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint(state(1.0), last)
    fill(tiny_disk, leave=last.stat().st_size // 2)
    with pytest.raises(OSError, match=f"no space left in {tiny_disk / 'checkpoints'}") as failed:
        checkpoint_io.save_checkpoint(state(2.0), last)
    assert failed.value.errno == errno.ENOSPC
    assert checkpoint_problem(last) is None
    assert torch.load(last, weights_only=True)["state_dict"]["w"][0] == 1.0
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"], "no temporary file is left"


class FillDiskAtStep(L.Callback):
    """Fill the file system of ``disk`` after optimiser step ``step``, leaving half a checkpoint free."""

    def __init__(self, step: int, disk: str) -> None:
        self.step = step
        self.disk = Path(disk)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        """Fill the disk once ``global_step`` reaches ``step`` (an earlier checkpoint is there)."""
        if trainer.global_step == self.step:
            last = next(self.disk.glob("**/last.ckpt"))
            fill(self.disk, leave=last.stat().st_size // 2)


def test_fit_on_a_full_disk_stops_naming_the_folder_and_resumes(tiny_disk, tiny_fit_args, tmp_path, capsys):
    run = tiny_disk / "run"
    full = {"class_path": f"{__name__}.FillDiskAtStep", "init_args": {"step": 3, "disk": str(run)}}
    filling, plain = tmp_path / "filling.yaml", tmp_path / "plain.yaml"
    filling.write_text(yaml.safe_dump({"trainer": {"callbacks": [full]}}))
    plain.write_text(yaml.safe_dump({"trainer": {"callbacks": []}}))
    args = [
        "--config",
        RECIPE,
        *tiny_fit_args,
        "--model.init_args.backbone=resnet10t",
        f"--trainer.default_root_dir={run}",
        "--trainer.logger=false",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=3",
        "--data.init_args.batch_size=4",
        "--checkpoint.every_n_train_steps=2",
        "--checkpoint.save_top_k=0",
    ]
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *args, "--config", str(filling)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsss: error: ") and "\n" not in err
    assert f"no space left in {run / 'checkpoints'}" in err
    last = run / "checkpoints" / "last.ckpt"
    assert checkpoint_problem(last) is None and torch.load(last, weights_only=False)["global_step"] == 2

    (run / "filler").unlink()
    resume([*args, "--config", str(plain)])
    assert torch.load(last, weights_only=False)["global_step"] == 6


def test_a_write_failing_halfway_keeps_the_old_file_and_names_the_folder(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(state(1.0, size=10), target)

    def half_then_full(obj, file, *args, **kwargs):
        file.write(b"PK half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(OSError, match=f"no space left in {target.parent} \\(while writing last.ckpt\\)"):
        AtomicCheckpointIO().save_checkpoint(state(2.0, size=10), target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["state_dict"]["w"][0] == 1.0
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_atomic_write_gives_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f.bin", lambda file: file.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640


def write_checkpoint(path: Path, content: dict | bytes, age: int) -> Path:
    """Write a checkpoint (a state or raw bytes) modified ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    stamp = 10**18 - age * 10**9
    os.utime(path, ns=(stamp, stamp))
    return path


def test_resume_passes_over_unusable_checkpoints_for_the_newest_that_loads(tmp_path, capsys):
    checkpoints = tmp_path / "lightning_logs/version_0/checkpoints"
    good = write_checkpoint(checkpoints / "epoch=0-step=2.ckpt", state(1.0, size=10), age=30)
    whole = good.read_bytes()
    write_checkpoint(checkpoints / "weights.ckpt", {"state_dict": {}}, age=20)
    truncated = write_checkpoint(checkpoints / "last.ckpt", whole[: len(whole) // 2], age=10)
    assert find_last_checkpoint(tmp_path) == good
    err = capsys.readouterr().err
    assert f"skipping {truncated}: it does not load" in err
    assert "weights.ckpt: it holds no training state" in err
    assert f"continuing from {good}, the newest usable checkpoint" in err

    good.write_bytes(b"")
    with pytest.raises(ValueError, match=r"no checkpoint below .* can continue the run: 3 checked"):
        find_last_checkpoint(tmp_path)
