"""wsss.pseudo refiners: random walk, pixel-adaptive refinement (vs a brute-force reference), dense CRF."""

import math
import sys

import numpy as np
import pytest
import torch

from wsss.pseudo.affinity import WALK_PRESETS, AffinityRandomWalk, random_walk, token_grid, transition_matrix
from wsss.pseudo.crf import CRF_PRESETS, DenseCRF, image_to_uint8_rgb, import_pydensecrf
from wsss.pseudo.par import PixelAdaptiveRefiner

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _random_affinity(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, n, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------- random walk


def test_transition_matrix_rows_sum_to_one_and_match_definition():
    affinity = _random_affinity(2, 6)
    transition = transition_matrix(affinity, beta=3.0, symmetrize=True)
    powered = affinity**3
    symmetric = (powered + powered.transpose(1, 2)) / 2
    torch.testing.assert_close(transition.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    torch.testing.assert_close(transition, symmetric / symmetric.sum(-1, keepdim=True))


@pytest.mark.parametrize("n_squarings", [0, 1, 3])
def test_random_walk_by_squaring_equals_matrix_power(n_squarings):
    affinity = _random_affinity(2, 5, seed=1)
    scores = torch.rand(2, 3, 5, dtype=torch.float64)
    transition = transition_matrix(affinity, beta=2.0)
    power = torch.linalg.matrix_power(transition, 2**n_squarings)
    expected = torch.einsum("bij,bcj->bci", power, scores)
    torch.testing.assert_close(random_walk(affinity, scores, beta=2.0, n_squarings=n_squarings), expected)


def test_random_walk_direction_on_a_hand_example():
    # Unsymmetrised A = [[1, 0], [1, 1]]: the walk from patch 0 stays there, the walk from patch 1 splits
    # evenly, so the walked scores are [s0, (s0 + s1) / 2].
    affinity = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    scores = torch.tensor([[[2.0, 4.0]]])
    walked = random_walk(affinity, scores, beta=1.0, n_squarings=0, symmetrize=False)
    torch.testing.assert_close(walked, torch.tensor([[[2.0, 3.0]]]))


@pytest.mark.parametrize("device", DEVICES)
def test_identity_affinity_leaves_scores_unchanged(device):
    scores = torch.rand(2, 4, 6, 5, device=device)
    image = torch.rand(2, 3, 6, 5, device=device)
    identity = torch.eye(30, device=device).expand(2, -1, -1)
    refined = AffinityRandomWalk("psa", bg_mode="keep")(image, scores, identity)
    torch.testing.assert_close(refined, scores)
    torch.testing.assert_close(
        random_walk(identity, scores.flatten(2), beta=8.0, n_squarings=6), scores.flatten(2)
    )


def test_walk_pools_scores_onto_the_token_grid_and_upsamples_back():
    # A uniform affinity averages everything: every output pixel holds the image mean of each channel.
    scores = torch.rand(1, 3, 8, 12)
    refined = AffinityRandomWalk("psa", bg_mode="keep", log_t=0)(
        torch.rand(1, 3, 8, 12), scores, torch.ones(1, 6, 6)
    )
    torch.testing.assert_close(refined, scores.mean(dim=(2, 3), keepdim=True).expand_as(scores))


def test_walk_background_modes():
    scores = torch.rand(1, 3, 4, 4)
    image = torch.rand(1, 3, 4, 4)
    identity = torch.eye(16)[None]
    constant = AffinityRandomWalk("psa")(image, scores, _random_affinity(1, 16).float())
    torch.testing.assert_close(constant[:, 0], torch.full((1, 4, 4), 0.39))
    power = AffinityRandomWalk("psa", bg_mode="power", alpha=2.0)(image, scores, identity)
    torch.testing.assert_close(power[:, 0], (1 - scores[:, 1:].amax(1)) ** 2)
    threshold = AffinityRandomWalk("irn")(image, scores, identity)
    torch.testing.assert_close(threshold[:, 0], torch.full((1, 4, 4), 0.25))
    torch.testing.assert_close(threshold[:, 1:], scores[:, 1:] / scores[:, 1:].max())
    sipe = AffinityRandomWalk("sipe")(image, scores, identity)
    torch.testing.assert_close(sipe, scores**1.5)


def test_walk_presets_and_overrides():
    assert (WALK_PRESETS["psa"].beta, WALK_PRESETS["psa"].log_t, WALK_PRESETS["psa"].bg_value) == (8, 6, 0.39)
    assert (WALK_PRESETS["irn"].beta, WALK_PRESETS["irn"].log_t, WALK_PRESETS["irn"].bg_value) == (
        10,
        8,
        0.25,
    )
    walk = AffinityRandomWalk("irn", beta=4.0)
    assert (walk.params.beta, walk.params.log_t) == (4.0, 8)
    with pytest.raises(ValueError, match="unknown preset"):
        AffinityRandomWalk("nope")


def test_walk_input_errors():
    walk = AffinityRandomWalk()
    image, scores = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="needs an affinity"):
        walk(image, scores)
    with pytest.raises(ValueError, match="non-negative"):
        walk(image, scores, -torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="spatial size"):
        walk(torch.rand(1, 3, 8, 8), scores, torch.ones(1, 4, 4))


def test_token_grid_matches_the_aspect_ratio():
    assert token_grid(16 * 12, 256, 192) == (16, 12)
    assert token_grid(6, 20, 30) == (2, 3)
    assert token_grid(7, 10, 10) in {(1, 7), (7, 1)}


# ---------------------------------------------------------------- pixel-adaptive refinement


def _par_brute_force(image, scores, iterations, dilations, w1, w2):
    """PAR by explicit loops over pixels and neighbours (clamped coordinates), in float64."""
    channels, height, width = image.shape
    offsets = [(d * dy, d * dx) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]

    def clamp(y, x):
        return min(max(y, 0), height - 1), min(max(x, 0), width - 1)

    def softmax(values):
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        return [e / sum(exps) for e in exps]

    def std(values):
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    distances = [math.hypot(oy, ox) for oy, ox in offsets]
    position = softmax([-((d / (std(distances) + 1e-8) / w1) ** 2) for d in distances])
    weights = np.zeros((height, width, len(offsets)))
    for y in range(height):
        for x in range(width):
            logits = [0.0] * len(offsets)
            for c in range(channels):
                values = [image[c][clamp(y + oy, x + ox)] for oy, ox in offsets]
                sigma = std(values)
                for n, value in enumerate(values):
                    logits[n] -= (abs(value - image[c, y, x]) / (sigma + 1e-8) / w1) ** 2 / channels
            colour = softmax(logits)
            weights[y, x] = [(colour[n] + w2 * position[n]) / (1 + w2) for n in range(len(offsets))]
    current = scores.copy()
    for _ in range(iterations):
        updated = np.zeros_like(current)
        for y in range(height):
            for x in range(width):
                for n, (oy, ox) in enumerate(offsets):
                    updated[:, y, x] += weights[y, x, n] * current[(slice(None), *clamp(y + oy, x + ox))]
        current = updated
    return current


@pytest.mark.parametrize("dilations", [(1, 2, 3), (1, 2, 4, 8, 12, 24)])
def test_par_matches_brute_force_reference(dilations):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 6, 7, generator=generator, dtype=torch.float64) * 255
    scores = torch.rand(2, 3, 6, 7, generator=generator, dtype=torch.float64)
    refined = PixelAdaptiveRefiner(iterations=3, dilations=dilations)(image, scores)
    for b in range(2):
        expected = _par_brute_force(image[b].numpy(), scores[b].numpy(), 3, dilations, 0.3, 0.01)
        np.testing.assert_allclose(refined[b].numpy(), expected, atol=1e-5, rtol=0)
    refined32 = PixelAdaptiveRefiner(iterations=3, dilations=dilations)(image.float(), scores.float())
    torch.testing.assert_close(refined32, refined.float(), atol=1e-5, rtol=0)


def test_par_is_invariant_to_per_channel_rescaling_and_works_for_any_band_count():
    image = torch.rand(1, 5, 12, 10, dtype=torch.float64)
    scores = torch.rand(1, 4, 12, 10, dtype=torch.float64)
    par = PixelAdaptiveRefiner(iterations=2)
    scale = torch.tensor([2.0, 1000.0, 0.01, 5.0, 1.0], dtype=torch.float64)[None, :, None, None]
    # Equal up to the 1e-8 added to each std; without the std normalisation they would differ by ~0.1.
    torch.testing.assert_close(par(image * scale - 3.0, scores), par(image, scores), atol=1e-4, rtol=0)
    torch.testing.assert_close(par.weights(image).sum(1), torch.ones(1, 12, 10, dtype=torch.float64))


def _square_scene(size: int = 32, low: int = 9, high: int = 23, seed: int = 0):
    """A red square on a green background, its true mask, and coarse scores whose square is 4 px too large."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.zeros(size, size, dtype=torch.long)
    truth[low:high, low:high] = 1
    colour = torch.where(
        truth.bool()[None],
        torch.tensor([200.0, 40, 40])[:, None, None],
        torch.tensor([40.0, 160, 60])[:, None, None],
    )
    image = (colour + 8 * torch.randn(3, size, size, generator=generator)).clamp(0, 255)[None]
    coarse = torch.zeros(size, size)
    coarse[low - 4 : high + 4, low - 4 : high + 4] = 0.8
    scores = torch.stack([torch.full((size, size), 0.4), coarse])[None]
    return image, scores, truth


@pytest.mark.parametrize("device", DEVICES)
def test_par_improves_boundary_agreement(device):
    image, scores, truth = _square_scene()
    refined = PixelAdaptiveRefiner(iterations=20, dilations=(1, 2, 4))(image.to(device), scores.to(device))
    before = (scores.argmax(1)[0] == truth).float().mean()
    after = (refined.argmax(1)[0].cpu() == truth).float().mean()
    assert after > before + 0.05


# ---------------------------------------------------------------- dense CRF


def test_crf_presets_are_the_documented_parameters():
    # methods.md §6 and §5(d): (unary, gaussian sxy, compat, bilateral sxy, srgb, compat).
    documented = {
        "psa": ("prob", 3, 3, 80, 13, 10),
        "irn": ("label", 3, 3, 50, 5, 10),
        "mctformer": ("prob", 4, 3, 83, 5, 3),
        "deeplab": ("prob", 1, 3, 67, 3, 4),
    }
    for name, numbers in documented.items():
        p = CRF_PRESETS[name]
        assert (
            p.unary,
            p.gaussian_sxy,
            p.gaussian_compat,
            p.bilateral_sxy,
            p.bilateral_srgb,
            p.bilateral_compat,
        ) == numbers
    assert CRF_PRESETS["irn"].gt_prob == 0.7


def test_missing_pydensecrf_gives_install_instructions(monkeypatch):
    for module in ("pydensecrf", "pydensecrf.densecrf", "pydensecrf.utils"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install 'wsss\[crf\]'"):
        import_pydensecrf()
    with pytest.raises(ImportError, match="pydensecrf2"):
        DenseCRF("psa")


def test_image_to_uint8_rgb_scaling_rules():
    raw = torch.tensor([0.0, 100.0, 255.0]).view(3, 1, 1).expand(3, 2, 2)
    assert image_to_uint8_rgb(raw)[0, 0].tolist() == [0, 100, 255]
    unit = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    assert image_to_uint8_rgb(unit)[0, 0].tolist() == [0, 128, 255]
    bands = torch.tensor([[-2.0, 2.0], [1000.0, 3000.0], [5.0, 6.0], [9.0, 9.0]]).view(4, 1, 2)
    assert image_to_uint8_rgb(bands)[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    single = image_to_uint8_rgb(torch.full((1, 2, 2), 7.0))
    assert single.shape == (2, 2, 3) and single.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("preset", ["psa", "irn", "mctformer", "deeplab"])
def test_dense_crf_improves_boundary_agreement(preset):
    pytest.importorskip("pydensecrf")
    image, scores, truth = _square_scene()
    refined = DenseCRF(preset)(image, scores)
    torch.testing.assert_close(refined.sum(1), torch.ones(1, 32, 32))
    before = (scores.argmax(1)[0] == truth).float().mean()
    after = (refined.argmax(1)[0] == truth).float().mean()
    assert after > before + 0.05


def test_dense_crf_keeps_absent_classes_at_zero():
    pytest.importorskip("pydensecrf")
    image, scores, _ = _square_scene(size=16, low=4, high=12)
    scores = torch.cat([scores[:, :1], torch.zeros(1, 1, 16, 16), scores[:, 1:]], dim=1)
    refined = DenseCRF("irn")(image, scores)
    assert refined[:, 1].abs().max() == 0
    torch.testing.assert_close(refined.sum(1), torch.ones(1, 16, 16))
    only_background = DenseCRF("psa")(image, torch.cat([scores[:, :1], torch.zeros(1, 2, 16, 16)], dim=1))
    torch.testing.assert_close(only_background[:, 0], torch.ones(1, 16, 16))


# ---------------------------------------------------------------- configuration


def test_refiners_build_from_class_path_yaml():
    jsonargparse = pytest.importorskip("jsonargparse")
    from wsss.pseudo.refiner import Refiner

    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--refiner", type=Refiner | None, default=None)
    par_yaml = "refiner: {class_path: wsss.pseudo.par.PixelAdaptiveRefiner, init_args: {dilations: [1, 2]}}"
    par = parser.instantiate(parser.parse_string(par_yaml)).refiner
    assert isinstance(par, PixelAdaptiveRefiner) and par.dilations == (1, 2) and par.iterations == 10
    walk_yaml = (
        "refiner: {class_path: wsss.pseudo.affinity.AffinityRandomWalk, init_args: {preset: irn, beta: 4}}"
    )
    walk = parser.instantiate(parser.parse_string(walk_yaml)).refiner
    assert walk.needs_affinity and (walk.params.beta, walk.params.log_t, walk.params.bg_value) == (4, 8, 0.25)
