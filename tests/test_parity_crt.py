"""Parity of CRT with the official code (huodongjian0603/crt@5aa670a, TS-CAM@25aece4) on the golden fixture
tests/data/parity/crt.pt (see crt.md there for every key; section numbers refer to it). The multi-scale fusion
(section 7) is tested with the shared fusion."""

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.losses.crt import crt_loss
from wsss.methods.crt import CRT
from wsss.methods.optim import build_optimizer, lr_factor
from wsss.models.attention import AttentionCapture, vit_attention_modules
from wsss.models.crt_checkpoint import (
    irn_resnet_to_crt_cnn,
    official_crt_state_dict,
    tscam_to_crt_transformer,
)
from wsss.models.crt_vit import CRTTransformer
from wsss.models.cut_merge import cut_tiles, merge_tiles, pad_for_tiles
from wsss.models.irn_resnet import create_irn_resnet, freeze_to_stride_8
from wsss.recipes import load_recipe

ROOT = Path(__file__).parent
FIXTURE = torch.load(ROOT / "data/parity/crt.pt", weights_only=True)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMALL = {"vit": "deit_tiny_patch16_224", "vit_depth": 1, "vit_img_size": 32, "num_classes": 20,
         "cam_scales": (1.0,)}


def fixture(prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in FIXTURE.items() if k.startswith(prefix)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol_of_max: float = 1e-9) -> None:
    """The .md's tolerance: rtol of the tensor's max |value|."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=rtol_of_max * scale)


# ---------------------------------------------------------------- section 1: settings and schedule


def test_voc_recipe_carries_the_official_settings():
    recipe = load_recipe(ROOT.parent / "recipes/crt_voc.yaml")
    model, data = recipe["model"]["init_args"], recipe["data"]["init_args"]
    assert model["cam_scales"] == FIXTURE["recipe/cam_scales"].tolist()
    assert model["cam_weight"] == FIXTURE["recipe/cam_lambda"]
    assert model["bg_threshold"] == FIXTURE["recipe/cam_eval_thres"]
    assert data["batch_size"] == FIXTURE["recipe/cam_batch_size"]
    assert recipe["trainer"]["max_epochs"] == FIXTURE["recipe/cam_num_epoches"]
    assert model["lr"] == FIXTURE["recipe/cam_learning_rate"] == FIXTURE["optim/step0/lr"][0]
    head_lr = FIXTURE["optim/step0/lr"][1].item()
    assert model["lr"] * model["head_lr_scale"] == pytest.approx(head_lr, rel=1e-12)
    assert model["weight_decay"] == FIXTURE["recipe/cam_weight_decay"] == FIXTURE["optim/weight_decay"][0]
    assert model["momentum"] == FIXTURE["optim/sgd_momentum"][0]  # the official quirk, reproduced
    assert model["poly_power"] == FIXTURE["optim/poly_power"] and model["scheduler"] == "poly"
    assert data["crop_size"] == FIXTURE["train_data/crop_size"] == FIXTURE["val_data/crop_size"]
    assert model["cam_weight_start_epoch"] == 1 and model.get("cam_l1_size") is None  # L1 at the 336 crop
    assert not model["cnn_dilated"] and model["cnn_frozen"]
    assert data["resize_long"] == FIXTURE["train_data/resize_long"].tolist() and data["scale_range"] == [1, 1]
    assert data.get("hflip", True) == FIXTURE["train_data/hor_flip"]


def test_poly_schedule_and_parameter_groups_give_the_official_learning_rates():
    model = CRT(**SMALL, cnn_backbone="resnet18")
    optimizer = build_optimizer(model.param_groups(), "sgd", 0.1, 1e-4, 1e-4, (0.9, 0.999))
    factor = partial(lr_factor, total_steps=int(FIXTURE["optim/max_step"]), warmup_steps=0, name="poly",
                     poly_power=FIXTURE["optim/poly_power"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    for step in (0, 1):
        lrs = torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)
        torch.testing.assert_close(lrs, FIXTURE[f"optim/step{step}/lr"], rtol=1e-12, atol=0)
        optimizer.step()
        schedule.step()
    assert [g["momentum"] for g in optimizer.param_groups] == FIXTURE["optim/sgd_momentum"].tolist()
    assert [g["weight_decay"] for g in optimizer.param_groups] == FIXTURE["optim/weight_decay"].tolist()


def test_configured_optimiser_decays_every_parameter_as_the_official_one():
    """The official PolyOptimizer decays biases, norms, cls_token and pos_embed too (both groups 1e-4)."""
    model = CRT(**SMALL, cnn_backbone="resnet18", lr=0.1, momentum=1e-4, weight_decay=1e-4)
    model.trainer = SimpleNamespace(estimated_stepping_batches=int(FIXTURE["optim/max_step"]), max_epochs=1,
                                    gradient_clip_val=None)
    optimizer = model.configure_optimizers()["optimizer"]
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.requires_grad}
    lrs = torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)
    torch.testing.assert_close(lrs, FIXTURE["optim/step0/lr"], rtol=1e-12, atol=0)


# ---------------------------------------------------------------- section 2: cutting and merging


def official_padded(size: int) -> int:
    """The official rule, written out: max((s // 112 + 1) * 112, 224)."""
    return max((size // 112 + 1) * 112, 224)


SIZES = [tuple(s) for s in FIXTURE["cut/sizes"].tolist()]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cutting_and_merging_match_the_official_tiles(size: tuple[int, int]):
    h, w = size
    cut = fixture(f"cut/{h}x{w}/")
    image = torch.zeros(2, 1, h, w)
    padded = pad_for_tiles(image, 224, 112, extra_half_tile=True)
    assert list(padded.shape[-2:]) == cut["padded"].tolist()
    paper = pad_for_tiles(image, 224, 112).shape[-2:]  # the default: the paper's tile counts
    expected_paper = [224 + math.ceil(max(s - 224, 0) / 112) * 112 for s in size]
    assert list(paper) == expected_paper
    assert (list(paper) == cut["padded"].tolist()) == all(s % 112 or s < 224 for s in size)
    # an image whose pixels encode (image, row, column) identifies every tile by its top-left pixel
    rows, cols = torch.meshgrid(torch.arange(padded.shape[-2]), torch.arange(padded.shape[-1]), indexing="ij")
    code = torch.stack([torch.stack([torch.full_like(rows, b), rows, cols]) for b in range(2)]).double()
    tiles, grid = cut_tiles(code, 224, 112)
    assert list(grid) == cut["grid"].tolist()
    assert torch.equal(tiles[:, :, 0, 0].long(), cut["tile_index"])
    merged = merge_tiles(cut["tile_maps"].double(), 2, grid, 7)
    torch.testing.assert_close(merged, cut["merged"], rtol=1e-12, atol=0)
    assert [math.ceil(h / 16), math.ceil(w / 16)] == cut["crop"].tolist()


# ---------------------------------------------------------------- section 3: TS-CAM coupling and loops


def official_deit(loops: int = 3, **kwargs) -> CRTTransformer:
    config = fixture("deit/config/")
    model = CRTTransformer(
        "deit_small_patch16_224", num_classes=config["num_classes"], loops=loops,
        embed_dim=config["embed_dim"], depth=config["depth"], num_heads=config["num_heads"],
        mlp_ratio=config["mlp_ratio"],
        patch_size=config["patch_size"], img_size=config["img_size"], **kwargs,
    ).double()
    model.load_state_dict(tscam_to_crt_transformer(fixture("deit/state/")), strict=True)
    assert model.vit.norm.eps == config["layernorm_eps"]
    return model.eval()


def normalised(image_u8: torch.Tensor) -> torch.Tensor:
    """The official dataloader's normalisation (float64, rounded to float32), as a (1, 3, H, W) batch."""
    mean, std = torch.tensor(MEAN, dtype=torch.float64), torch.tensor(STD, dtype=torch.float64)
    x = ((image_u8.double() / 255 - mean) / std).float()
    return x.permute(2, 0, 1)[None].double()


@pytest.fixture(scope="module")
def deit_run() -> dict:
    model = official_deit()
    x = normalised(FIXTURE["deit/image_u8"])
    x2 = torch.cat([x, x.flip(-1)])
    padded = pad_for_tiles(x2, 224, 112)
    tiles, grid = cut_tiles(padded, 224, 112)
    vit, states, calls = model.vit, [], []
    hooks = [block.register_forward_hook(lambda *_: calls.append(1)) for block in vit.blocks]
    with torch.no_grad():
        state = vit._pos_embed(vit.patch_embed(tiles))
        states.append(state)
        for _ in range(3):
            state = state + vit.blocks(state)
            states.append(state)
        calls.clear()
        rows = []  # the class-token row of every block call
        capture = AttentionCapture(vit_attention_modules(vit), on_map=lambda i, a: rows.append(a[..., 0, 1:]))
        with capture:
            tokens = model.forward_tokens(tiles)
        block_calls = len(calls)
        tile_cams, attention = model.tile_cams_and_attention(tiles)
        train_logits, train_cam = model.train()(padded)
        model.eval()
        _, refined_padded = model.refined_cams(padded)
        _, refined = model.refined_cams(x2)
    for hook in hooks:
        hook.remove()
    maps = torch.stack(rows).mean(2)  # (36 block calls, tiles, 196)
    return {"model": model, "x2": x2, "padded": padded, "grid": grid, "tiles": tiles, "states": states,
            "calls": block_calls, "tokens": tokens, "attn_cls": maps.reshape(3, 12, 4, 196).sum(0),
            "tile_cams": tile_cams, "attention": attention, "train_cam": train_cam,
            "train_logits": train_logits,
            "refined_padded": refined_padded, "refined": refined}


def test_tscam_tiles_loops_and_tokens_match(deit_run: dict):
    assert list(deit_run["padded"].shape[-2:]) == FIXTURE["deit/padded"].tolist()
    assert list(deit_run["grid"]) == FIXTURE["deit/grid"].tolist()
    assert deit_run["calls"] == FIXTURE["deit/block_calls"]
    assert_close(torch.stack(deit_run["states"]), FIXTURE["deit/loop_states"])
    assert_close(deit_run["tokens"], FIXTURE["deit/tokens"])


def test_tscam_attention_and_tile_cams_match_with_the_factor_36(deit_run: dict):
    assert_close(deit_run["attn_cls"], FIXTURE["deit/attn_cls"])
    assert_close(36 * deit_run["attention"], FIXTURE["deit/attention"])
    assert_close(deit_run["tile_cams"], FIXTURE["deit/tile_cams"])
    assert_close(36 * deit_run["attention"] * deit_run["tile_cams"], FIXTURE["deit/coupled_tiles"])


def test_tscam_training_and_eval_outputs_match(deit_run: dict):
    assert_close(deit_run["train_cam"], FIXTURE["deit/train_cam"])
    assert_close(deit_run["train_logits"], FIXTURE["deit/train_logits"])
    assert_close(36 * deit_run["refined_padded"], FIXTURE["deit/coupled_merged"])
    cams = 36 * deit_run["refined"].clamp_min(0)
    assert cams.shape[-2:] == (13, 19)
    assert_close(cams[0] + cams[1].flip(-1), FIXTURE["deit/cam"])


def test_plain_tscam_is_zero_loops_with_the_factor_12():
    model = official_deit(loops=0)
    x = normalised(FIXTURE["deit/image_u8"])
    tiles, _ = cut_tiles(pad_for_tiles(torch.cat([x, x.flip(-1)]), 224, 112), 224, 112)
    with torch.no_grad():
        logits, cams = model.refined_cams(tiles)  # 224 px tiles: one tile each, nothing merged
    assert_close(logits, FIXTURE["tscam/logits"])
    assert_close(12 * cams, FIXTURE["tscam/cams"])


def test_official_padding_switch_reproduces_the_official_eval_crop():
    """On a 224-px side the official code adds a half tile before cutting; ``tile_padding="official"`` too."""
    paper, official = official_deit(), official_deit(tile_padding="official")
    x = normalised(FIXTURE["deit/image_u8"])[..., :, :224]  # 200 x 224: the width is a multiple of 112
    with torch.no_grad():
        cams_paper, cams_official = paper.refined_cams(x)[1], official.refined_cams(x)[1]
        padded = F.pad(x, (0, official_padded(224) - 224, 0, official_padded(200) - 200))
        tiles, grid = cut_tiles(padded, 224, 112)
        cams, attention = official.tile_cams_and_attention(tiles)
        by_hand = merge_tiles(cams * attention, 1, grid, 7)[..., :13, :14]
        assert grid == (1, 2)
    torch.testing.assert_close(cams_official, by_hand, rtol=0, atol=1e-12)
    assert cams_paper.shape == cams_official.shape and (cams_paper - cams_official).abs().max() > 1e-3
    with torch.no_grad():  # training keeps the paper's padding (the official code pads only to make CAMs)
        torch.testing.assert_close(official.train()(x)[1], paper.train()(x)[1], rtol=0, atol=0)


# ---------------------------------------------------------------- section 4: initialisation of the DeiT head


def test_deit_head_and_tokens_keep_the_official_initialisation():
    init = fixture("deit_init/")
    torch.manual_seed(0)
    model = CRTTransformer("deit_small_patch16_224", num_classes=20)
    weight, bias = model.head.weight.detach(), model.head.bias.detach()
    assert list(weight.shape) == init["head_weight_shape"].tolist()
    bound = 1 / math.sqrt(init["head_fan_in"])
    assert weight.abs().max() <= bound and bias.abs().max() <= bound
    assert weight.std().item() == pytest.approx(init["head_weight_std"], rel=0.05)
    assert bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.25)  # 20 values only
    qkv = model.vit.blocks[0].attn.qkv
    assert qkv.weight.std().item() == pytest.approx(init["linear_weight_std"], rel=0.05)
    assert qkv.bias.abs().max() == init["linear_bias_absmax"]
    assert model.vit.pos_embed.std().item() == pytest.approx(init["pos_embed_std"], rel=0.05)
    assert model.vit.cls_token.std().item() == pytest.approx(init["cls_token_std"], rel=0.5)  # 384 values
    crt = CRT(**SMALL, cnn_backbone="resnet18")
    names = {id(p): n for n, p in crt.named_parameters()}
    heads = [names[id(p)] for p in crt.param_groups()[1]["params"]]
    official = init["head_in_lr10_group"].split(",")
    assert heads == ["cnn_classifier.weight", *(f"transformer.{n}" for n in official)]


# ---------------------------------------------------------------- section 5: the CNN branch


def conv_row(conv: nn.Module | None) -> list[int]:
    if conv is None:
        return [-1, -1, -1, -1]
    return [conv.kernel_size[0], conv.stride[0], conv.dilation[0], conv.padding[0]]


def block_rows(block: nn.Module) -> list[list[int]]:
    downsample = block.downsample[0] if block.downsample is not None else None
    return [conv_row(block.conv1), conv_row(block.conv2), conv_row(block.conv3), conv_row(downsample)]


@pytest.fixture(scope="module")
def resnet152() -> CRT:
    with torch.device("meta"):
        return CRT(cnn_backbone="resnet152", **(SMALL | {"vit_img_size": 224}))


def test_cnn_is_irns_undilated_resnet152(resnet152: CRT):
    cnn = resnet152.cnn
    stem = [conv_row(cnn.conv1), [cnn.maxpool.kernel_size, cnn.maxpool.stride, cnn.maxpool.dilation,
                                  cnn.maxpool.padding]]
    assert stem == FIXTURE["cnn/stem"].tolist()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        rows = [block_rows(block) for block in cnn.get_submodule(name)]
        assert rows == FIXTURE[f"cnn/{name}"].tolist(), name
    norms = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == FIXTURE["cnn/batchnorm_count"]
    classifier = resnet152.cnn_classifier
    assert list(classifier.weight.shape) == FIXTURE["cnn/classifier_weight_shape"].tolist()
    assert (classifier.bias is not None) == FIXTURE["cnn/classifier_has_bias"]
    for size, expected in zip(FIXTURE["cnn/cam_sizes_in"].tolist(), FIXTURE["cnn/cam_sizes_out"].tolist(),
                              strict=True):
        cam = resnet152.cnn_forward(torch.empty(1, 3, *size, device="meta"))[1]
        assert list(cam.shape[-2:]) == expected, size


def test_dilated_switch_keeps_timms_output_stride_16(resnet152: CRT):
    with torch.device("meta"):
        dilated = CRT(cnn_backbone="resnet152", cnn_dilated=True, **(SMALL | {"vit_img_size": 224}))
    assert [block_rows(b)[1] for b in dilated.cnn.layer4] == [[3, 1, 1, 1], [3, 1, 2, 2], [3, 1, 2, 2]]
    assert [block_rows(b)[1] for b in resnet152.cnn.layer4] == [[3, 1, 1, 1]] * 3
    cam = dilated.cnn_forward(torch.empty(1, 3, 321, 481, device="meta"))[1]
    assert list(cam.shape[-2:]) == [21, 31]


def test_irn_layout_handles_avg_down_resnets_and_other_cnns_need_the_dilated_switch():
    with torch.device("meta"):
        resnet10t = create_irn_resnet("resnet10t")  # average-pool shortcut: it becomes the identity
        assert resnet10t(torch.empty(1, 3, 321, 481))[-1].shape[-2:] == (21, 31)
        assert isinstance(resnet10t.layer4[0].downsample[0], nn.Identity)
        with pytest.raises(ValueError, match="cnn_dilated=True"):
            create_irn_resnet("convnext_atto")
        convnext = create_irn_resnet("convnext_atto", dilated=True)
        assert convnext(torch.empty(1, 3, 64, 64))[-1].shape[-2:] == (4, 4)
        assert freeze_to_stride_8(convnext) == ["stem_0", "stem_1", "stages_0", "stages_1"]


def test_cnn_freezing_and_fixed_batchnorm_match_the_official_training():
    torch.manual_seed(0)
    model = CRT(**SMALL, cnn_backbone="resnet18").train()
    cnn = model.cnn
    groups = {"conv1_bn1": [cnn.conv1, cnn.bn1], "layer1": [cnn.layer1], "layer2": [cnn.layer2],
              "layer3": [cnn.layer3], "layer4": [cnn.layer4], "classifier": [model.cnn_classifier]}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for m in cnn.modules():  # non-trivial running statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        train_cam = model.cnn_forward(x)[1]
        eval_cam = model.eval().cnn_forward(x)[1]
    assert torch.allclose(train_cam, eval_cam, atol=1e-6) == FIXTURE["cnn/bn_train_mode_uses_running_stats"]
    model.train()
    model.cnn_forward(x)[1].sum().backward()
    for name, modules in groups.items():
        params = [p for m in modules for p in m.parameters()]
        assert all(p.grad is not None for p in params) == FIXTURE[f"cnn/has_grad/{name}"], name
        assert any(p.grad is not None for p in params) == FIXTURE[f"cnn/has_grad/{name}"], name
    for name, modules in groups.items():  # documented: requires_grad=False replaces the detach after layer2
        requires_grad = all(p.requires_grad for m in modules for p in m.parameters())
        assert requires_grad == (FIXTURE[f"cnn/requires_grad/{name}"] and name not in ("layer1", "layer2"))
    # so layers 1-2 are out of the optimiser, as the official SGD skips parameters without a gradient
    trainable = {id(p) for g in model.param_groups() for p in g["params"]}
    assert not any(id(p) in trainable for m in (cnn.layer1, cnn.layer2) for p in m.parameters())


def test_unfrozen_switch_trains_every_layer_with_batch_statistics():
    torch.manual_seed(0)
    model = CRT(**SMALL, cnn_backbone="resnet18", cnn_frozen=False).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        train_cam = model.cnn_forward(x)[1]
        eval_cam = model.eval().cnn_forward(x)[1]
    assert not torch.allclose(train_cam, eval_cam, atol=1e-3)
    model.train().cnn_forward(x)[1].sum().backward()
    assert all(p.grad is not None for p in model.cnn.parameters())


# ---------------------------------------------------------------- section 6: the loss of step/train_cam.py


class StoredCAM(nn.Module):
    """A branch that returns a stored raw CAM (trainable) and its spatial mean."""

    def __init__(self, cam: torch.Tensor) -> None:
        super().__init__()
        self.cam = nn.Parameter(cam.double())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cam.mean((2, 3)), self.cam


@pytest.mark.parametrize("epoch", [0, 1])
def test_training_loss_and_gradients_match_in_both_epochs(epoch: int, monkeypatch):
    loss = fixture("loss/")
    model = CRT(**SMALL, cnn_backbone="resnet18", cam_weight=loss["cam_lambda"])
    cnn = StoredCAM(loss["cam_cnn"])
    model.transformer = StoredCAM(loss["cam_vit"])
    monkeypatch.setattr(model, "cnn_forward", cnn.forward)
    monkeypatch.setattr(CRT, "current_epoch", property(lambda self: epoch))
    images = torch.zeros(2, 3, *loss["upsample_size"].tolist())  # the 336 crop
    out = model.training_losses({"image": images, "cls_labels": loss["label"]})
    for key, name in (("loss1", "cls_cnn"), ("loss2", "cls_vit"), ("loss3", "cam_l1"), ("total", "loss")):
        assert out[name].item() == pytest.approx(loss[f"epoch{epoch}/{key}"], rel=1e-10, abs=0), key
    out["loss"].backward()
    torch.testing.assert_close(cnn.cam.grad, loss[f"epoch{epoch}/grad_cam_cnn"], rtol=1e-10, atol=1e-16)
    torch.testing.assert_close(model.transformer.cam.grad, loss[f"epoch{epoch}/grad_cam_vit"], rtol=1e-10,
                               atol=1e-16)


def test_l1_term_pins_the_upsampling_size_and_the_size_switch():
    loss = fixture("loss/")
    cnn, vit = loss["cam_cnn"].double(), loss["cam_vit"].double()

    def l1(size: tuple[int, int]) -> torch.Tensor:
        return crt_loss(cnn.mean((2, 3)), vit.mean((2, 3)), cnn, vit, loss["label"], size, 0.1)["cam_l1"]

    assert l1((336, 336)).item() == pytest.approx(loss["epoch1/loss3"], rel=1e-10)
    assert l1((320, 320)).item() != pytest.approx(loss["epoch1/loss3"], rel=1e-9)
    model = CRT(**SMALL, cnn_backbone="resnet18", cam_l1_size=336)
    model.transformer = StoredCAM(loss["cam_vit"])
    model.cnn_forward = StoredCAM(loss["cam_cnn"]).forward
    out = model.training_losses({"image": torch.zeros(2, 3, 320, 320), "cls_labels": loss["label"]})
    assert out["cam_l1"].item() == pytest.approx(loss["epoch1/loss3"], rel=1e-10)


# ---------------------------------------------------------------- checkpoint conversion


def test_official_cnn_and_deit_checkpoints_load_strictly():
    model = CRT(**SMALL, cnn_backbone="resnet18")
    deit = {f"module.{k}": v for k, v in fixture("deit/state/").items()}  # DataParallel, as torch.save'd
    ours = model.state_dict()
    official_cnn = {"classifier.weight": torch.randn_like(ours["cnn_classifier.weight"])}
    for key, value in ours.items():
        if key.startswith("cnn."):
            random = torch.randn_like(value.float()).to(value.dtype)
            official_cnn["resnet50." + key.removeprefix("cnn.")] = random
    aliases = {"stage1.0.weight": official_cnn["resnet50.conv1.weight"],
               "backbone.3.0.layer4.0.conv1.weight": torch.zeros(1), "newly_added.0.weight": torch.zeros(1)}
    state = official_crt_state_dict({"state_dict": official_cnn | aliases}, None)
    assert set(state) == {k for k in ours if k.startswith(("cnn.", "cnn_classifier."))}
    model.load_state_dict(state, strict=False)
    assert torch.equal(model.cnn.layer3[0].conv1.weight, official_cnn["resnet50.layer3.0.conv1.weight"])
    assert torch.equal(model.cnn_classifier.weight, official_cnn["classifier.weight"])
    width24 = official_deit()
    assert set(official_crt_state_dict(None, deit)) == {f"transformer.{k}" for k in width24.state_dict()}
    with pytest.raises(KeyError, match=r"unexpected key 'extra\.weight'"):
        irn_resnet_to_crt_cnn({"extra.weight": torch.zeros(1)})
