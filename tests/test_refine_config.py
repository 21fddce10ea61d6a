"""The refine fragments of recipes/_base_/refine/: stacked after any recipe, they append a refined writer."""

import json
from pathlib import Path

import pytest

from wsss.callbacks import PseudoMaskWriter
from wsss.main import main, make_cli
from wsss.pseudo.affinity import AffinityRandomWalk, WalkParams
from wsss.pseudo.par import PixelAdaptiveRefiner

RECIPES = Path(__file__).parents[1] / "recipes"
REFINE = RECIPES / "_base_" / "refine"
CAM_RECIPE = str(RECIPES / "cam_baseline_synthetic.yaml")
MCT_RECIPE = str(RECIPES / "mctformer_v2_synthetic.yaml")


def writers(args: list[str]) -> list[PseudoMaskWriter]:
    """The PseudoMaskWriters of the trainer that the CLI builds from ``args``."""
    trainer = make_cli(args, run=False).trainer
    return [callback for callback in trainer.callbacks if isinstance(callback, PseudoMaskWriter)]


def with_fragment(recipe: str, fragment: str, tiny_args: list[str], *extra: str) -> list[PseudoMaskWriter]:
    """Writers of ``recipe`` followed by ``--config <fragment>``."""
    return writers(["--config", recipe, "--config", str(REFINE / fragment), *tiny_args, *extra])


def test_par_fragment_appends_a_refined_writer_and_keeps_the_recipes(tiny_fit_args: list[str]):
    recipe_writer, refined = with_fragment(CAM_RECIPE, "par.yaml", tiny_fit_args)
    assert recipe_writer.refiner is None
    assert recipe_writer.output_dir == Path("runs/cam_baseline_synthetic/pseudo_masks")
    assert refined.output_dir == Path("runs/pseudo_masks_refined/par")
    assert isinstance(refined.refiner, PixelAdaptiveRefiner)
    par = refined.refiner
    assert (par.iterations, par.dilations, par.w1, par.w2) == (10, (1, 2, 4, 8, 12, 24), 0.3, 0.01)


def test_the_appended_writer_is_overridden_from_the_command_line(tiny_fit_args: list[str]):
    _, refined = with_fragment(
        CAM_RECIPE, "par.yaml", tiny_fit_args,
        "--trainer.callbacks.init_args.output_dir=elsewhere",
        "--trainer.callbacks.init_args.refiner.init_args.iterations=3",
        "--trainer.callbacks.init_args.refiner.init_args.dilations=[1,2]",
    )
    assert refined.output_dir == Path("elsewhere")
    assert (refined.refiner.iterations, refined.refiner.dilations) == (3, (1, 2))


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("crf_psa.yaml", ("prob", 3, 3, 80, 13, 10)),  # PSA crf_inference
        ("crf_irn.yaml", ("label", 3, 3, 50, 5, 10)),  # IRN crf_inference_label, gt_prob 0.7
    ],
)
def test_crf_fragments_carry_the_papers_settings(fragment: str, expected: tuple, tiny_fit_args: list[str]):
    pytest.importorskip("pydensecrf.densecrf")
    _, refined = with_fragment(CAM_RECIPE, fragment, tiny_fit_args)
    p = refined.refiner.params
    got = (p.unary, p.gaussian_sxy, p.gaussian_compat, p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat)
    assert got == expected and refined.refiner.iterations == 10 and p.gt_prob == 0.7
    assert refined.output_dir == Path(f"runs/pseudo_masks_refined/{Path(fragment).stem}")


def test_random_walk_fragment_on_a_method_with_patch_affinity(tiny_fit_args: list[str]):
    recipe_writer, refined = with_fragment(MCT_RECIPE, "random_walk.yaml", tiny_fit_args,
                                           "--trainer.callbacks.init_args.refiner.init_args.log_t=3")
    assert recipe_writer.refiner.params == WalkParams(beta=1.0, log_t=0, bg_mode="keep", symmetrize=False)
    assert isinstance(refined.refiner, AffinityRandomWalk) and refined.refiner.needs_affinity
    assert refined.refiner.params == WalkParams(beta=8.0, log_t=3, bg_mode="constant", bg_value=0.39)


def test_random_walk_fragment_is_refused_for_a_method_without_patch_affinity(tiny_fit_args: list[str]):
    cli = make_cli(["--config", CAM_RECIPE, "--config", str(REFINE / "random_walk.yaml"), *tiny_fit_args],
                   run=False)
    refined = [c for c in cli.trainer.callbacks if isinstance(c, PseudoMaskWriter)][-1]
    with pytest.raises(ValueError, match="CAMBaseline has no patch_affinity"):
        refined.setup(cli.trainer, cli.model, "predict")


def test_stacked_fragments_write_every_refinement_in_one_predict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_fit_args: list[str], synthetic_voc: Path
):
    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", CAM_RECIPE, "--config", str(REFINE / "par.yaml"),
          "--config", str(REFINE / "par.yaml"), "--trainer.callbacks.init_args.output_dir=par_3_iterations",
          "--trainer.callbacks.init_args.refiner.init_args.iterations=3", *tiny_fit_args])
    names = (synthetic_voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    for folder in ("runs/cam_baseline_synthetic/pseudo_masks", "runs/pseudo_masks_refined/par",
                   "par_3_iterations"):
        assert sorted(p.stem for p in (tmp_path / folder).glob("*.png")) == sorted(names), folder
        assert 0 <= json.loads((tmp_path / folder / "metrics.json").read_text())["pseudo_mask_miou"] <= 1
