"""Two-process CPU DDP through the real command line: fit, then predict sharded over the ranks.

``strategy=ddp`` re-launches ``sys.argv`` for rank 1, so the DDP runs are subprocesses of ``python -m wsss``
(inside pytest the child would re-run the test session and hide its failures). Training under DDP is not
numerically the single-process run (BatchNorm statistics per rank, another shuffling), so the comparison is
of what DDP must not change: the synced validation metrics of the trained weights and the pseudo-mask
metrics of the prediction writer, against single-process runs on the same checkpoint and data.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wsss.data.synthetic import make_synthetic_voc
from wsss.main import main, make_cli
from wsss.pseudo.io import MANIFEST, MARKER

ROOT = Path(__file__).parents[1]
RECIPE = str(ROOT / "recipes" / "cam_baseline_synthetic.yaml")
DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]


def run_wsss(args: list[str], cwd: Path) -> None:
    """``python -m wsss ARGS`` in a subprocess; its exit code and error output are checked."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "wsss", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"wsss {args[0]} under DDP failed:\n{done.stderr[-4000:]}"


def writer_config(path: Path, output_dir: Path) -> str:
    """A config file whose only callback is a ``PseudoMaskWriter`` into ``output_dir``."""
    writer = {"class_path": "wsss.callbacks.PseudoMaskWriter", "init_args": {"output_dir": str(output_dir)}}
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [writer]}}))
    return str(path)


def last_logged(metrics_csv: Path, key: str) -> float:
    """The last value of ``key`` in a CSVLogger ``metrics.csv``."""
    rows = [row[key] for row in csv.DictReader(metrics_csv.open()) if row.get(key)]
    return float(rows[-1])


@pytest.mark.slow
def test_ddp_fit_and_predict_match_one_process(tmp_path: Path):
    # odd split sizes: a padding DistributedSampler would repeat one image in validation and predict
    data = make_synthetic_voc(tmp_path / "voc", n_train=15, n_val=7, size=48, seed=1)
    names = (data / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert len(names) == 15
    common = [
        "--config",
        RECIPE,
        f"--data.init_args.root={data}",
        "--data.init_args.crop_size=48",
        "--data.init_args.batch_size=4",
        "--data.init_args.eval_batch_size=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    ddp_run, one_run = tmp_path / "ddp", tmp_path / "one"
    fit = [
        *common,
        f"--trainer.default_root_dir={ddp_run}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={ddp_run}",
        "--trainer.max_epochs=1",
        "--trainer.log_every_n_steps=1",
    ]
    run_wsss(["fit", *fit, *DDP], tmp_path)
    version = ddp_run / "lightning_logs/version_0"
    ckpt = next(version.glob("checkpoints/*.ckpt"))
    ddp_val = {key: last_logged(version / "metrics.csv", key) for key in ("val/map", "val/seed_miou")}

    ddp_masks, one_masks = tmp_path / "masks_ddp", tmp_path / "masks_one"
    predict = [*common, f"--ckpt_path={ckpt}"]
    run_wsss(
        [
            "predict",
            *predict,
            "--config",
            writer_config(tmp_path / "w_ddp.yaml", ddp_masks),
            f"--trainer.default_root_dir={ddp_run}",
            *DDP,
        ],
        tmp_path,
    )
    written = sorted(p.name for p in ddp_masks.iterdir())
    expected = [f"{name}.png" for name in names] + ["iou_table.md", "metrics.json", MANIFEST, MARKER]
    assert written == sorted(expected), (
        "every image exactly once and no temporary file left"
    )

    validate = make_cli(
        [
            "validate",
            *common,
            f"--ckpt_path={ckpt}",
            f"--trainer.default_root_dir={one_run}",
            "--trainer.logger=false",
            "--trainer.devices=1",
        ]
    )
    one_val = {key: float(validate.trainer.callback_metrics[key]) for key in ddp_val}
    assert one_val == pytest.approx(ddp_val, abs=1e-5)

    main(
        [
            "predict",
            *predict,
            "--config",
            writer_config(tmp_path / "w_one.yaml", one_masks),
            f"--trainer.default_root_dir={one_run}",
            "--trainer.devices=1",
        ]
    )
    ddp_metrics = json.loads((ddp_masks / "metrics.json").read_text())
    one_metrics = json.loads((one_masks / "metrics.json").read_text())
    assert ddp_metrics == pytest.approx(one_metrics, abs=1e-6)
    for name in names:
        assert (ddp_masks / f"{name}.png").read_bytes() == (one_masks / f"{name}.png").read_bytes()
