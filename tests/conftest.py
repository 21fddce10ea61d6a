"""Shared fixtures: offline settings and a tiny synthetic VOC-layout dataset."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the VOC layout (32 train, 8 val images of 48 px), shared by the session."""
    from wsss.data.synthetic import make_synthetic_voc

    return make_synthetic_voc(tmp_path_factory.mktemp("synthetic_voc"), n_train=32, n_val=8, size=48, seed=0)


@pytest.fixture()
def tiny_fit_args(synthetic_voc: Path, tmp_path: Path) -> list[str]:
    """CLI overrides that make any synthetic recipe run in seconds."""
    return [
        f"--data.init_args.root={synthetic_voc}",
        "--data.init_args.crop_size=48",
        "--data.init_args.batch_size=8",
        "--data.init_args.eval_batch_size=8",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
