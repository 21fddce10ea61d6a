"""The main job end to end (``make demo``) at a tiny size.

Too short to learn: that each stage learns is checked in test_cam_baseline and test_segmentation_task.
"""

import json

import pytest

from wsss.demo import results_table, run


@pytest.mark.slow
def test_demo_runs_all_stages_and_writes_its_table_and_panel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = run(tmp_path / "data", tmp_path / "out", epochs=2, seg_epochs=2, n_train=32, size=48)
    expected = {
        "seed_miou",
        "pseudo_mask_miou",
        "final_miou",
        "upper_bound_miou",
        "all_background",
        "most_frequent_class",
        "seed_bg_threshold",
        "pseudo_mask_bg_threshold",
    }
    assert set(results) == expected
    assert all(0 <= v <= 1 for v in results.values())
    assert json.loads((tmp_path / "out/results.json").read_text()) == results
    assert (tmp_path / "out/results.md").read_text() == results_table(results)
    assert (tmp_path / "out/panel.png").stat().st_size > 0
    assert len(list((tmp_path / "out/pseudo_masks").glob("*.png"))) == 32
