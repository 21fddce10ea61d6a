"""Sparse multimodal ViT: early summation, eq. 4, pseudo-mask clustering/assignment, the CLI fit + predict."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.main import main
from wsss.methods.optim import build_optimizer
from wsss.methods.sparse_vit import SparseViT
from wsss.models.multimodal_vit import create_multimodal_vit
from wsss.pseudo.clustering import (
    assign_classes,
    attention_pseudo_mask,
    binarize_map,
    cam_pseudo_mask,
    cls_attention_maps,
    merge_class_maps,
)

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)


@pytest.fixture(scope="module")
def synthetic_dfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsss.data.synthetic import make_synthetic_dfc2020

    return make_synthetic_dfc2020(tmp_path_factory.mktemp("dfc"), n_train=12, n_test=4, size=32, seed=0)


def test_early_summation_equals_one_embedding_of_the_concatenation():
    torch.manual_seed(0)
    vit = create_multimodal_vit((2, 13), num_classes=8, **TINY)
    s1_proj, s2_proj = vit.patch_embed.proj.projections
    x = torch.randn(2, 15, 32, 32)
    weight = torch.cat([s1_proj.weight, s2_proj.weight], dim=1)
    expected = F.conv2d(x, weight, s1_proj.bias + s2_proj.bias, stride=8)
    assert torch.allclose(vit.patch_embed.proj(x), expected, atol=1e-5)
    assert vit(torch.randn(1, 15, 40, 40)).shape == (1, 8)  # any size: padded, pos-embedding interpolated


def test_modality_channels_must_match_the_data():
    with pytest.raises(ValueError, match="sum to 13"):
        SparseViT(modality_channels=(13,), in_channels=15, **TINY)


def test_training_loss_is_bce_plus_lambda_times_expected_open_heads():
    torch.manual_seed(0)
    model = SparseViT((2, 13), sparsity_weight=0.1, **TINY).train()
    labels = torch.tensor([[1.0] + [0] * 7, [0, 1.0] + [0] * 6])
    batch = {"image": torch.randn(2, 15, 32, 32), "cls_labels": labels}
    losses = model.training_losses(batch)
    shift = 0.33 * np.log(0.1 / 1.1)
    penalty = torch.sigmoid(model.gates.gate.log_alpha - shift).sum()
    assert losses["l0_penalty"].item() == pytest.approx(penalty.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(losses["bce"].item() + 0.1 * penalty.item(), rel=1e-5)
    model.eval()
    logits = model.classify(batch["image"])
    assert torch.equal(model.open_heads(), model.gates.gate.log_alpha > 0)
    assert logits.shape == (2, 8)


def test_gates_learn_at_their_own_rate():
    model = SparseViT((2, 13), **TINY, gate_lr_scale=10.0, lr=1e-3, optimizer="adamw")
    groups = [{id(p) for p in g["params"]} for g in model.param_groups()]
    assert groups[1] == {id(model.gates.gate.log_alpha)} and not groups[0] & groups[1]
    assert groups[0] | groups[1] == {id(p) for p in model.parameters()}
    built = build_optimizer(model.param_groups(), "adamw", 1e-3, 0.01, 0.9, (0.9, 0.95))
    assert [g["lr"] for g in built.param_groups] == pytest.approx([1e-3, 1e-2])
    assert len(SparseViT((2, 13), **TINY, head_gates=False).param_groups()) == 1


def test_a_layer_without_open_heads_gives_no_maps():
    assert cls_attention_maps(torch.rand(0, 17, 17), (4, 4), (32, 32)).shape == (0, 32, 32)


def test_assignment_gives_distinct_classes_with_the_best_total():
    scores = np.array([[0.9, 0.8, 0.1], [0.95, 0.2, 0.3], [0.5, 0.4, 0.45]])
    chosen = assign_classes(scores)
    assert len(set(chosen.tolist())) == 3
    best = max(itertools.permutations(range(3)), key=lambda p: sum(scores[i, p[i]] for i in range(3)))
    assert tuple(chosen.tolist()) == best == (1, 0, 2)  # greedy argmax would give class 0 twice
    with pytest.raises(ValueError, match="distinct"):
        assign_classes(np.ones((3, 2)))


def test_binarize_and_merge_by_hand():
    values = np.array([[0.1, 0.9], [0.85, 0.05]])
    assert binarize_map(values).tolist() == [[False, True], [True, False]]
    maps = np.array([[[0.9, 0.8, 0.0, 0.0], [0.0] * 4], [[0.0, 0.6, 0.0, 0.0], [0.0, 0.0, 0.0, 0.7]]])
    foreground = maps > 0.5
    # (0,1) is covered by both: map 0 wins (0.8 > 0.6); uncovered pixels take the nearest covered pixel's
    # class: (0,2) -> (0,1) at 1 (vs (1,3) at 1.41), (1,2) -> (1,3), (0,3) -> (1,3), (1,0) -> (0,0),
    # (1,1) -> (0,1)
    mask = merge_class_maps(maps, foreground, [3, 7])
    assert mask.tolist() == [[3, 3, 3, 7], [3, 3, 7, 7]]


def test_overlap_rules_higher_foreground_mean_or_higher_pixel_value():
    # map 0: foreground mean 0.6, map 1: 0.85; at (0, 1) map 0 is higher (0.7 > 0.6)
    maps = np.array([[[0.5, 0.7, 0.0]], [[0.0, 0.6, 1.1]]])
    foreground = maps > 0.4
    assert merge_class_maps(maps, foreground, [3, 7]).tolist() == [[3, 7, 7]]  # official: map 1 takes it
    assert merge_class_maps(maps, foreground, [3, 7], overlap="pixel_value").tolist() == [[3, 3, 7]]
    with pytest.raises(ValueError, match="overlap"):
        merge_class_maps(maps, foreground, [3, 7], overlap="max")
    with pytest.raises(ValueError, match="overlap_rule"):
        SparseViT((2, 13), overlap_rule="max", **TINY)
    with pytest.raises(ValueError, match="class_assignment"):
        SparseViT((2, 13), class_assignment="greedy", **TINY)


def test_cls_attention_maps_are_max_normalised_and_cropped():
    attn = torch.zeros(2, 5, 5)
    attn[0, 0, 1:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    attn[1, 0, 1:] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    maps = cls_attention_maps(attn, (2, 2), (14, 15))
    assert maps.shape == (2, 14, 15)
    assert maps[0, -1, -1].item() == pytest.approx(1.0) and maps[1, 0, 0].item() == pytest.approx(1.0)


def test_attention_pseudo_mask_clusters_heads_and_assigns_by_masked_forward():
    h = w = 8
    left = torch.zeros(h, w)
    left[:, :4] = 1
    head_maps = torch.stack([left, left * 0.9, 1 - left, (1 - left) * 0.8])
    image = torch.ones(1, h, w)
    image[0, :, 4:] = 2  # the "classifier" sees class 3 where the image is 1 and class 5 where it is 2

    def classify(batch: torch.Tensor) -> torch.Tensor:
        probs = torch.zeros(batch.shape[0], 8)
        probs[:, 2] = (batch == 1).float().mean((1, 2, 3))
        probs[:, 4] = (batch == 2).float().mean((1, 2, 3))
        return probs

    mask, note = attention_pseudo_mask(head_maps, image, [5, 3], classify)
    assert note is None
    assert (mask[:, :4] == 3).all() and (mask[:, 4:] == 5).all()
    whole, _ = attention_pseudo_mask(head_maps, image, [6], classify)
    assert (whole == 6).all()
    few, note = attention_pseudo_mask(head_maps[:1], image, [5, 3], classify)
    assert "1 open head" in note and few.shape == (h, w)
    with_grad, _ = attention_pseudo_mask(head_maps.requires_grad_(), image, [5, 3], classify)  # Grad-CAM on
    assert (with_grad == mask).all()


def test_cam_pseudo_mask_binarises_and_merges():
    cams = np.zeros((8, 4, 4))
    cams[0, :2] = 1.0
    cams[3, 2:] = 0.8
    assert cam_pseudo_mask(cams, [1, 4]).tolist() == [[1] * 4] * 2 + [[4] * 4] * 2


def test_predicted_and_reference_classes():
    model = SparseViT((2, 13), num_clusters="reference", **TINY)
    probs = torch.tensor([0.2, 0.9, 0.1, 0.6, 0, 0, 0, 0])
    truth = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0])
    assert model.classes_to_place(probs, truth) == ([4, 1], None)
    model.hparams.num_clusters = "predicted"
    assert model.classes_to_place(probs, truth) == ([2, 4], None)
    classes, note = model.classes_to_place(torch.full((8,), 0.1).index_fill(0, torch.tensor([6]), 0.3), None)
    assert classes == [7] and "top-scoring" in note


def test_loss_decreases_when_fitting_a_batch():
    torch.manual_seed(0)
    model = SparseViT((2, 13), **TINY)
    batch = {"image": torch.randn(8, 15, 32, 32), "cls_labels": (torch.rand(8, 8) > 0.5).float()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    first = model.training_losses(batch)["bce"].item()
    for _ in range(15):
        optimizer.zero_grad()
        model.training_losses(batch)["loss"].backward()
        optimizer.step()
    assert model.training_losses(batch)["bce"].item() < 0.8 * first


@pytest.mark.parametrize("method", ["attention", "gradcam"])
def test_cli_fit_and_predict_writes_a_mask_for_every_image(method, synthetic_dfc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [f"--data.init_args.root={synthetic_dfc}", "--data.init_args.crop_size=32",
            "--data.init_args.batch_size=4", "--data.init_args.eval_batch_size=4",
            "--model.init_args.img_size=32", "--model.init_args.embed_dim=32", "--model.init_args.depth=2",
            "--model.init_args.num_heads=4", f"--model.init_args.pseudo_mask_method={method}",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    config = str(RECIPES / "sparse_vit_synthetic.yaml")
    main(["fit", "--config", config, *args])
    version = next(tmp_path.glob("**/lightning_logs/version_0"))
    assert (version / "gates" / "history.json").exists() is False  # every_n_epochs=10 > 1 epoch
    ckpt = next(version.glob("checkpoints/*.ckpt"))
    main(["predict", "--config", config, *args, f"--ckpt_path={ckpt}"])
    masks = tmp_path / "runs/sparse_vit_synthetic/pseudo_masks"
    assert len(list(masks.glob("*.png"))) == 12
    metrics = json.loads((masks / "metrics.json").read_text())
    assert 0 <= metrics["pseudo_mask_miou"] <= 1


def test_gate_logger_logs_open_heads_sparsity_and_heatmaps(synthetic_dfc, tmp_path):
    import lightning as L

    from wsss.callbacks.gate_logger import GateLogger
    from wsss.data.dfc2020 import DFC2020DataModule

    dm = DFC2020DataModule(str(synthetic_dfc), crop_size=32, batch_size=4, eval_batch_size=4)
    model = SparseViT((2, 13), optimizer="adamw", lr=1e-3, **TINY)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[GateLogger(1)])
    trainer.fit(model, dm)
    open_heads = model.gates.gate.log_alpha > 0
    metrics = trainer.callback_metrics
    assert metrics["gates/sparsity_rate"].item() == pytest.approx(1 - open_heads.float().mean().item())
    assert metrics["gates/open_layer_1"].item() == open_heads[1].sum().item()
    folder = Path(trainer.log_dir) / "gates"
    assert sorted(p.name for p in folder.glob("*.png")) == ["epoch_000.png", "epoch_001.png"]
    history = json.loads((folder / "history.json").read_text())
    assert np.allclose(history["1"], model.gate_probabilities().numpy())


def test_gate_logger_refuses_a_model_without_gates(tmp_path):
    import lightning as L

    from wsss.callbacks.gate_logger import GateLogger

    with pytest.raises(ValueError, match="no head gates"):
        GateLogger().setup(L.Trainer(logger=False), torch.nn.Linear(1, 1), "fit")
