"""Parity of the multi-scale + flip CAM fusion with the official codes (issue 15, gap 1).

The official per-view maps stored in ``tests/data/parity`` go through wsss's own fusion
(``WSSSMethod.multiscale_cams``) by a stand-in method whose ``raw_cams`` returns them in the order the views
are made; the result must equal the official fused maps within the tolerances of the fixtures' notes.
"""

from pathlib import Path

import pytest
import torch

from wsss.methods.base import WSSSMethod
from wsss.methods.cam_baseline import CAMBaseline
from wsss.methods.crt import CRT
from wsss.methods.mctformer import MCTformer
from wsss.models.mct_official import convert_official_state_dict
from wsss.pseudo.background import cams_to_mask
from wsss.pseudo.fusion import normalize_fused, sum_views

PARITY = Path(__file__).parent / "data/parity"
SETTINGS = ("fusion_flip_back", "fusion_stride", "fusion_norm")


@pytest.fixture(scope="module")
def mct() -> dict:
    return torch.load(PARITY / "mctformer.pt", weights_only=True)


@pytest.fixture(scope="module")
def crt() -> dict:
    return torch.load(PARITY / "crt.pt", weights_only=True)


class StoredViews(WSSSMethod):
    """A stand-in whose ``raw_cams`` returns stored per-view maps in order and records the view sizes."""

    def __init__(self, views: list[torch.Tensor], settings: dict, **kwargs) -> None:
        super().__init__(num_classes=views[0].shape[1], **kwargs)
        self.views, self.view_sizes = list(views), []
        for name, value in settings.items():
            setattr(self, name, value)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        raise AssertionError("not used")

    def cams(self, images: torch.Tensor, cls_labels: torch.Tensor | None = None) -> torch.Tensor:
        raise AssertionError("the fusion must use raw_cams")

    def raw_cams(self, images: torch.Tensor, cls_labels: torch.Tensor | None = None) -> torch.Tensor:
        self.view_sizes.append(tuple(images.shape[-2:]))
        return self.views.pop(0)


def settings_of(method: type[WSSSMethod] | WSSSMethod) -> dict:
    return {name: getattr(method, name) for name in SETTINGS}


def mct_views(mct: dict, case: str) -> list[torch.Tensor]:
    if case == "v2/cam_ms":
        return [mct[f"{case}/view{i}"][None] for i in range(6)]
    return [view[None] for view in mct[f"{case}/views"]]


@pytest.mark.parametrize("case", ["v2/cam_s1", "v1/cam_s1", "v2/cam_ms"])
def test_mctformer_fusion_rebuilds_the_official_final_cam(mct, case):
    """``generate_attention_maps_ms``: upsample, gate, flip back, sum, per-class min–max (abs 1e-5)."""
    scales = tuple(mct[f"{case}/scales"].tolist())
    model = StoredViews(mct_views(mct, case), settings_of(MCTformer), cam_scales=scales, cam_flip=True)
    labels = mct["labels"][:1]
    fused = model.multiscale_cams(torch.zeros(1, 3, 224, 224), labels)
    assert not model.views
    assert model.view_sizes == [(round(224 * s),) * 2 for s in scales for _ in range(2)]
    classes = mct[f"{case}/classes"]
    torch.testing.assert_close(fused[0, classes], mct[f"{case}/final"], rtol=0, atol=1e-5)
    absent = torch.ones(20, dtype=torch.bool)
    absent[classes] = False
    assert torch.equal(fused[0, absent], torch.zeros_like(fused[0, absent]))


def test_mctformer_per_view_normalisation_is_not_the_official_fusion(mct):
    """The former wsss fusion (views normalised before the sum) misses ``final`` by far more than 1e-5."""
    views = [(v / v.amax((-2, -1), keepdim=True).clamp_min(1e-12), f) for v, f in
             zip(mct_views(mct, "v2/cam_s1"), (False, True), strict=True)]
    fused = normalize_fused(sum_views(views, (224, 224)), "max")[0, mct["v2/cam_s1/classes"]]
    assert (fused - mct["v2/cam_s1/final"]).abs().max() > 0.1


def official_mctformer(mct: dict, version: str, scales: tuple[float, ...]) -> MCTformer:
    """The fixture's tiny model with its official weights, through the converter users call."""
    model = MCTformer(backbone="deit_small_patch16_224", version=version, num_classes=20, drop_path_rate=0.0,
                      backbone_kwargs=dict(embed_dim=64, depth=4, num_heads=4), cam_layers=3,
                      affinity_layers=None, affinity_refine=True, cam_scales=scales, cam_flip=True)
    prefix = f"{version}/state_dict/"
    state = {k.removeprefix(prefix): v.clone() for k, v in mct.items() if k.startswith(prefix)}
    model.load_state_dict(convert_official_state_dict(state), strict=True)
    return model.eval()


@pytest.mark.parametrize("case", ["v2/cam_s1", "v1/cam_s1", "v2/cam_ms"])
def test_mctformer_multiscale_cams_of_the_official_weights_equal_final(mct, case):
    """End to end (refined, flip; scales 1 or 1, 0.5, 1.5): wsss's model and fusion give ``final`` (1e-5)."""
    model = official_mctformer(mct, case[:2], tuple(mct[f"{case}/scales"].tolist()))
    images = mct["images_int8"][:1].float() / mct["images_step"]
    with torch.no_grad():
        fused = model.multiscale_cams(images, mct["labels"][:1])
    torch.testing.assert_close(fused[0, mct[f"{case}/classes"]], mct[f"{case}/final"], rtol=0, atol=1e-5)


def crt_views(crt: dict, case: str) -> list[torch.Tensor]:
    """The stored raw CAMs of each scale, image then flipped view (in its own coordinates), ReLU'd."""
    raw = [crt[f"make_cam/{case}/raw/{i}"].double() for i in range(len(crt[f"make_cam/{case}/scales"]))]
    return [view[None].relu() for pair in raw for view in pair]


@pytest.mark.parametrize("case", ["A", "C"])
@pytest.mark.parametrize("method", ["crt", "cam_baseline"])
def test_irn_fusion_rebuilds_the_official_high_res_map(crt, case, method):
    """``step/make_cam.py``: flip back at the CAM grid, resize to 16·⌈·/16⌉, sum, crop, / (max + 1e-5).

    Case A (150×200) is not a multiple of 16, so it pins the resize-then-crop geometry. atol 1e-12 (float64).
    """
    settings = settings_of(CRT if method == "crt" else CAMBaseline(backbone="resnet18", num_classes=3))
    key = f"make_cam/{case}"
    height, width = crt[f"{key}/high_res"].shape[-2:]
    model = StoredViews(crt_views(crt, case), settings, cam_scales=tuple(crt[f"{key}/scales"].tolist()))
    labels = crt[f"{key}/label"][None].double()
    fused = model.multiscale_cams(torch.zeros(1, 3, height, width, dtype=torch.float64), labels)
    assert not model.views
    assert model.view_sizes == [tuple(size) for size in crt[f"{key}/view_sizes"].tolist() for _ in range(2)]
    keys = crt[f"{key}/keys"]
    torch.testing.assert_close(fused[0, keys], crt[f"{key}/high_res"], rtol=0, atol=1e-12)
    mask = cams_to_mask(fused, labels, bg_threshold=0.15)[0]
    assert torch.equal(mask, crt[f"{key}/mask_bg015"].long())


def test_irn_geometry_matters_on_case_a(crt):
    """Flipping back after the resize and resizing straight to h × w (MCTformer's geometry) misses case A."""
    settings = {"fusion_flip_back": "image", "fusion_stride": 1, "fusion_norm": "max"}
    model = StoredViews(crt_views(crt, "A"), settings, cam_scales=tuple(crt["make_cam/A/scales"].tolist()))
    fused = model.multiscale_cams(torch.zeros(1, 3, 150, 200, dtype=torch.float64))
    assert (fused[0, crt["make_cam/A/keys"]] - crt["make_cam/A/high_res"]).abs().max() > 0.1


def test_normalize_fused_uses_the_official_additive_eps():
    total = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]]]], dtype=torch.float64)
    torch.testing.assert_close(normalize_fused(total, "max"), total / (4.0 + 1e-5), rtol=0, atol=1e-15)
    torch.testing.assert_close(normalize_fused(total, "minmax"), total / (4.0 + 1e-8), rtol=0, atol=1e-15)
    assert torch.equal(normalize_fused(torch.zeros(1, 1, 2, 2), "minmax"), torch.zeros(1, 1, 2, 2))


def test_bad_fusion_settings_name_the_setting():
    model = StoredViews([torch.zeros(1, 2, 2, 2)], {"fusion_flip_back": "late", "fusion_stride": 1,
                                                    "fusion_norm": "max"})
    with pytest.raises(ValueError, match="fusion_flip_back"):
        model.multiscale_cams(torch.zeros(1, 3, 8, 8))
