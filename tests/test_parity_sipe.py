"""SWTformer-V2's SIPE building blocks against the official SIPE outputs in tests/data/parity/sipe.pt.

The fixture (see sipe.md next to it) holds what chenqi1126/SIPE@e0c6a3b computes on small float64 inputs;
tolerances are the .md's: maps and GSC 1e-4 abs, gradients 1e-3 relative (2e-3 in the ``faint`` case),
seeds exact, prototypes 1e-10 after SIPE's h*w / count rescale, CCL 1e-10. F_hie is fed in directly (the
fixture's ``hie_fea``) as a stub for wsss's HFF, which differs from SIPE's side branch by design.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from wsss.losses.swtformer import ccl_loss, gsc_loss
from wsss.methods.swtformer import SWTformer, image_region
from wsss.models.prototypes import (
    class_prototypes,
    locate_seeds,
    prototype_cams,
    valid_channels,
    with_background,
)
from wsss.models.swin_cam import PatchTokenCAMHead

REF = torch.load(Path(__file__).parent / "data/parity/sipe.pt", weights_only=True)
CASES = {"all": ("cam_logits", "labels_all"), "absent": ("cam_logits", "labels_absent"),
         "faint": ("cam_logits_faint", "labels_absent")}
GRAD_TOL = {"all": 1e-3, "absent": 1e-3, "faint": 2e-3}
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, img_size=32,
                 patch_size=2)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference over max abs reference (the .md's relative gradient measure)."""
    return float((a - ref).abs().max() / ref.abs().max())


def wsss_maps(case: str, over: str = "all") -> torch.Tensor:
    logits, labels = CASES[case]
    return with_background(PatchTokenCAMHead.normalize(REF[logits]), REF[labels], over)


class StubHFF(nn.Module):
    """Returns the fixture's F_hie whatever the stage maps are (the HFF output stub)."""

    def __init__(self, hie_fea: torch.Tensor) -> None:
        super().__init__()
        self.hie_fea = hie_fea

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.hie_fea


def stubbed_model(logits: torch.Tensor, tokens: torch.Tensor, hie_fea: torch.Tensor, **kwargs) -> SWTformer:
    """A V2 SWTformer whose forward gives the fixture's CAM logits and tokens, and whose HFF gives F_hie."""
    model = SWTformer("v2", backbone_overrides=TINY_SWIN, hff_dims=(8, 8, 8, 8), num_classes=20, **kwargs)
    model.hff = StubHFF(hie_fea)
    model.forward_cam = lambda images: (logits.mean((2, 3)), PatchTokenCAMHead.normalize(logits),
                                        [tokens, tokens, tokens, tokens])
    return model


def method_gsc(case: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``SWTformer.training_losses``'s GSC on the fixture and its gradients into CAM logits, F_hie, tokens."""
    logits_key, labels_key = CASES[case]
    logits = REF[logits_key].clone().requires_grad_()
    hie_fea = REF["hie_fea"].clone().requires_grad_()
    tokens = REF["tokens"].clone().requires_grad_()
    model = stubbed_model(logits, tokens, hie_fea, **kwargs)
    batch = {"image": torch.ones(2, 3, 128, 128, dtype=torch.float64), "cls_labels": REF[labels_key]}
    gsc = model.training_losses(batch)["gsc"]
    grad_cam, grad_fea, grad_tokens = torch.autograd.grad(gsc, [logits, hie_fea, tokens], allow_unused=True)
    return gsc.detach(), grad_cam, grad_fea, grad_tokens


@pytest.mark.parametrize("case", CASES)
def test_background_map_is_eq3_over_all_classes_as_sipe(case):
    assert (wsss_maps(case) - REF[f"cam_bg_{case}"]).abs().max() < 1e-4


def test_background_over_present_classes_is_the_documented_switch():
    old, ref = wsss_maps("absent", "present"), REF["cam_bg_absent"]
    assert (old[:, 1:] - ref[:, 1:]).abs().max() < 1e-4  # the class channels agree
    assert int(((old[:, 0] - ref[:, 0]).abs() > 1e-4).sum()) == 110  # M_B: 110/128 pixels (sipe.md gap 1)
    assert torch.allclose(wsss_maps("all", "present"), wsss_maps("all"))  # all classes present: the same


def test_cam_normalisation_has_sipes_additive_eps():
    maps = with_background(PatchTokenCAMHead.normalize(REF["cam_logits_small"]), REF["labels_all"])
    assert (maps - REF["cam_bg_small_all"]).abs().max() < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_seeds_with_abs_cosine_match_exactly(case):
    valid = valid_channels(REF[CASES[case][1]])
    assert torch.equal(locate_seeds(wsss_maps(case), REF["tokens"], valid), REF[f"seeds_abs_{case}"])


def test_seeds_with_relu_cosine_are_the_switch_for_sipes_similarity():
    maps, valid = wsss_maps("all"), valid_channels(REF["labels_all"])
    relu = locate_seeds(maps, REF["tokens"], valid, similarity="relu")
    assert torch.equal(relu, REF["seeds_relu_all"])
    abs_seeds = locate_seeds(maps, REF["tokens"], valid)
    assert int((abs_seeds != relu).any(1).sum()) == 52  # signed tokens: |cos| and ReLU(cos) differ (gap 3)
    nonneg = locate_seeds(maps, REF["tokens_nonneg"], valid)  # cos >= 0: the two coincide
    assert torch.equal(nonneg, REF["seeds_relu_nonneg_all"])


@pytest.mark.parametrize("case", CASES)
def test_prototypes_are_sipes_times_hw_over_seed_count(case):
    protos = class_prototypes(REF["hie_fea"], REF[f"seeds_abs_{case}"])
    count = REF[f"seed_count_{case}"]
    assert torch.equal(REF[f"seeds_abs_{case}"].sum((2, 3)), count)
    scaled = protos * count[:, :, None] / 64
    assert (scaled - REF[f"prototypes_{case}"]).abs().max() < 1e-10


@pytest.mark.parametrize("case", CASES)
def test_rcam_matches_sipes_normalised_is_cam(case):
    rcam = prototype_cams(REF["hie_fea"], REF[f"prototypes_{case}"])
    assert (rcam - REF[f"rcam_{case}"]).abs().max() < 1e-4
    # SIPE's scale or wsss's seed-count scale: the same R-CAM
    own = prototype_cams(REF["hie_fea"], class_prototypes(REF["hie_fea"], REF[f"seeds_abs_{case}"]))
    assert (own - REF[f"rcam_{case}"]).abs().max() < 1e-4


def test_coarse_token_grid_seeds_are_nearest_upsampled_to_f_hie():
    maps = with_background(PatchTokenCAMHead.normalize(REF["coarse_cam_logits"]), REF["labels_all"])
    assert (maps - REF["coarse_cam_bg_all"]).abs().max() < 1e-4
    seeds = locate_seeds(maps, REF["coarse_tokens"], valid_channels(REF["labels_all"]))
    assert torch.equal(seeds, REF["coarse_seeds_abs_all"])
    up = torch.nn.functional.interpolate(seeds, size=(8, 8), mode="nearest")
    protos = class_prototypes(REF["hie_fea"], up)
    assert (protos * up.sum((2, 3))[:, :, None] / 64 - REF["coarse_prototypes_all"]).abs().max() < 1e-10
    assert (prototype_cams(REF["hie_fea"], protos) - REF["coarse_rcam_all"]).abs().max() < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_gsc_value_and_gradients_of_the_method_match_sipe(case):
    gsc, grad_cam, grad_fea, grad_tokens = method_gsc(case)
    assert abs(float(gsc) - REF[f"gsc_{case}"]) < 1e-4
    assert rel_err(grad_cam, REF[f"gsc_grad_cam_logits_{case}"]) < GRAD_TOL[case]
    assert rel_err(grad_fea, REF[f"gsc_grad_hie_fea_{case}"]) < GRAD_TOL[case]
    assert grad_tokens is None and REF[f"gsc_tokens_get_grad_{case}"] == 0  # the seeds carry no gradient


def test_gsc_with_background_over_present_classes_differs_as_measured():
    gsc, grad_cam, _, _ = method_gsc("absent", background_over="present")
    assert abs(float(gsc) - 0.049730) < 1e-5  # sipe.md gap 1: SIPE 0.037337
    assert rel_err(grad_cam, REF["gsc_grad_cam_logits_absent"]) > 1.5
    absent = ~valid_channels(REF["labels_absent"])[:, 1:]
    assert torch.equal(grad_cam[absent], torch.zeros_like(grad_cam[absent]))  # no gradient to absent classes
    assert REF["gsc_grad_cam_logits_absent"][absent].abs().max() > 0


def test_gsc_of_plain_sipe_with_relu_cosine_seeds():
    gsc = method_gsc("all", seed_similarity="relu")[0]
    assert abs(float(gsc) - REF["gsc_relu_all"]) < 1e-4


def test_gsc_detach_cam_zeroes_only_the_cam_gradient():
    gsc, grad_cam, grad_fea, _ = method_gsc("absent", gsc_detach_cam=True)
    assert abs(float(gsc) - REF["gsc_absent"]) < 1e-4
    assert grad_cam is None or torch.equal(grad_cam, torch.zeros_like(grad_cam))
    assert REF["gsc_grad_cam_logits_absent"].abs().max() > 0  # SIPE's is not zero
    assert rel_err(grad_fea, REF["gsc_grad_hie_fea_absent"]) < 1e-3


def test_crop_padding_is_sipes_valid_mask():
    """SIPE zeroes M on crop padding (all channels) before its seeds and GSC; padded tokens get no seed."""
    logits = REF["cam_logits_faint"].clone().requires_grad_()
    hie_fea = REF["hie_fea"].clone().requires_grad_()
    image = torch.ones(2, 3, 128, 128, dtype=torch.float64)
    image[:, :, :, 96:] = 0  # the right quarter is padding: token columns 6-7 of the 8x8 grid
    labels = REF["labels_absent"]
    inside = image_region(image)
    assert torch.equal(inside[:, :, :, :96], torch.ones(2, 1, 128, 96)) and inside[..., 96:].sum() == 0
    keep = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    keep[..., 6:] = 0
    # by hand, SIPE's order: M with background masked, seeds from it then masked, prototypes, GSC
    maps = wsss_maps("faint") * keep
    seeds = keep * locate_seeds(maps, REF["tokens"], valid_channels(labels))
    rcam = prototype_cams(REF["hie_fea"], class_prototypes(REF["hie_fea"], seeds))
    expected = gsc_loss(maps, rcam)
    model = stubbed_model(logits, REF["tokens"], hie_fea)
    losses = model.training_losses({"image": image, "cls_labels": labels})
    assert abs(losses["gsc"].item() - expected.item()) < 1e-10
    unmasked = stubbed_model(logits, REF["tokens"], hie_fea, mask_crop_padding=False)
    assert abs(unmasked.training_losses({"image": image, "cls_labels": labels})["gsc"].item()
               - REF["gsc_faint"]) < 1e-4
    assert abs(losses["gsc"].item() - REF["gsc_faint"]) > 1e-3


def test_ccl_printed_matches_the_dumped_formula():
    cam, rcam, valid = REF["ccl_pair_cam"], REF["ccl_pair_rcam"], REF["ccl_pair_valid"]
    assert abs(float(ccl_loss(cam, rcam, valid, "printed")) - REF["ccl_printed"]) < 1e-10
    # the contrastive reading is an interpretation (sipe.md gap 7); the global literal reading is not offered
    assert abs(float(ccl_loss(cam, rcam, valid, "contrastive")) - 0.238127) < 1e-6
    cos = torch.linspace(0, 1, 1301, dtype=torch.float64)
    eq6 = 0.5 * ((2 / 3 * cos) ** 2 + (1 - cos) ** 2)
    assert abs(float(cos[eq6.argmin()]) - REF["ccl_eq6_argmin"]) < 1e-3
