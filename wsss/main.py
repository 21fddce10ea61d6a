"""The ``wsss`` command line: LightningCLI (fit, validate, test, predict) + extra commands."""

import contextlib
import importlib
import itertools
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time

import lightning as L
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from wsss.data.base import WSSSDataModule
from wsss.models.weights import WeightsNotFoundError, restoring_checkpoint
from wsss.recipes import expand_config_args
from wsss.replaced_args import linked_values, log_replaced
from wsss.trainer import Trainer
from wsss.worker_errors import worker_errors

PACKAGE = Path(__file__).resolve().parent
DATASET_SUFFIXES = ("_voc", "_coco", "_cub", "_dfc2020")
PAPER_SPARSE_RECIPES = ("sasformer_point", "sasformer_scribble")
EXTRA_COMMANDS = {
    "synth": "wsss.data.synthetic",
    "demo": "wsss.demo",
    "sweep": "wsss.sweep",
    "resume": "wsss.resume",
    "affinity-labels": "wsss.pseudo.confident",
    "check": "wsss.check",
}
#: the model arguments that take an ImageNet checkpoint
WEIGHTS_KEYS = ("weights", "cnn_weights", "vit_weights", "encoder_weights")
#: the model arguments that take a trained official checkpoint: given, no :func:`scratch_warning`
OFFICIAL_KEYS = ("official_checkpoint", "official_weights")


class ConfigSaver(SaveConfigCallback):
    """Save the resolved config next to the run's logs (as Lightning does) and into every wandb run."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Push the resolved config to every wandb logger of the trainer."""
        config = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(yaml.safe_load(config), allow_val_change=True)


class WSSSCLI(LightningCLI):
    """LightningCLI in subclass mode that links the data's class and band counts into the model.

    A ``checkpoint`` group (ModelCheckpoint) always keeps ``last.ckpt``, which ``wsss resume`` continues from.
    ``recipes``: the recipe files given with ``--config``, for :func:`scratch_warning`.
    """

    def __init__(self, *args, recipes: Sequence[str] = (), **kwargs) -> None:
        self.recipes = list(recipes)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        """Every model takes ``num_classes`` and ``in_channels`` from the data; last.ckpt is always kept."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse as LightningCLI does, noting first the linked values the recipes and overrides give."""
        self.given_linked = linked_values(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """A wsss ``WandbLogger`` without ``save_dir`` writes into ``trainer.default_root_dir``."""
        trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            is_wandb = getattr(logger, "class_path", None) == "wsss.loggers.WandbLogger"
            if is_wandb and not logger.init_args.save_dir:
                logger.init_args.save_dir = trainer.default_root_dir or os.getcwd()

    def instantiate_classes(self) -> None:
        """Build data, model and trainer; then a paper recipe about to train from random weights says so
        (:func:`scratch_warning`; fit and ``wsss check`` only, not when resuming from ``ckpt_path``). With a
        ``ckpt_path`` file, the networks' initial weights files are not read: the checkpoint restores them."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        restoring = config.get("ckpt_path") and Path(config.ckpt_path).is_file()
        with restoring_checkpoint() if restoring else contextlib.nullcontext():
            super().instantiate_classes()
        if self.subcommand in (None, "fit") and not config.get("ckpt_path"):
            warning = scratch_warning(self.recipes, config.model)
            if warning and rank_zero_only.rank == 0:
                print(warning, file=sys.stderr)

    def before_predict(self) -> None:
        """Refuse a prediction that would write nothing: the command line keeps no returned predictions."""
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            raise ValueError(
                "wsss predict: no prediction writer in trainer.callbacks, so nothing would be saved; add "
                "one, e.g. --trainer.callbacks+=wsss.callbacks.PseudoMaskWriter "
                "--trainer.callbacks.init_args.output_dir=DIR (LocalisationBoxWriter for WSOL)"
            )

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The trainer with the ``checkpoint`` callback, unless ``trainer.enable_checkpointing`` is false.

        Data and model exist by now: a linked value of the recipes that the data's replaced is logged first.
        """
        log_replaced(self.given_linked, self.datamodule)
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        keys = self._parser(self.subcommand).callback_keys
        if trainer_config.get("enable_checkpointing") is False:
            keys = [key for key in keys if key != "checkpoint"]
        return self._instantiate_trainer(trainer_config, [self._get(self.config_init, key) for key in keys])


def recipe_files(args: Sequence[str]) -> list[str]:
    """The recipe files named by ``--config`` in ``args``."""
    values = [b for a, b in itertools.pairwise(args) if a == "--config"]
    values += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    return [v for v in values if v.endswith((".yaml", ".yml"))]


def is_paper_recipe(stem: str) -> bool:
    """Whether a recipe name is a paper's real-data recipe (not a ``*_synthetic`` twin or a user's file)."""
    return stem in PAPER_SPARSE_RECIPES or any(stem.endswith(s) or f"{s}_" in stem for s in DATASET_SUFFIXES)


def scratch_warning(recipes: Sequence[str], model) -> str:
    """A loud warning when a paper recipe (the first ``--config``, named ``*_voc``, ``*_coco``, ``*_cub``,
    ``*_dfc2020[_*]`` or ``sasformer_{point,scribble}``; later configs are fragments such as wandb or a
    refiner) leaves an ImageNet checkpoint argument of the model (:data:`WEIGHTS_KEYS`) null: the paper never
    trains that network from scratch."""
    paper = [stem for stem in (Path(r).stem for r in recipes[:1]) if is_paper_recipe(stem)]
    init_args = getattr(model, "init_args", None)
    unset = [k for k in WEIGHTS_KEYS if init_args is not None and k in init_args and init_args[k] is None]
    official = [k for k in OFFICIAL_KEYS if init_args is not None and init_args.get(k) is not None]
    if not paper or not unset or official:
        return ""
    keys = ", ".join(f"model.init_args.{k}" for k in unset)
    return (
        f"wsss: WARNING: {paper[-1]} is a paper recipe, but {keys} {'is' if len(unset) == 1 else 'are'} "
        "null: the network starts from random weights, which the paper never does (it starts from ImageNet "
        "weights).\n"
        f"wsss: WARNING: pass the checkpoint, e.g. --model.init_args.{unset[0]}=PATH (README.md, 'Your data, "
        "your weights'); ignore this only if training from scratch is what you want."
    )


def make_cli(args: list[str], run: bool = True) -> WSSSCLI:
    """Parse ``args`` (a subcommand first when ``run``); ``run=False`` only builds trainer, model, data.

    ``args`` replace the command line on purpose (scripts, notebooks), so LightningCLI's warning about a
    non-empty ``sys.argv`` next to them is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return WSSSCLI(
            L.LightningModule,
            WSSSDataModule,
            trainer_class=Trainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=ConfigSaver,
            save_config_kwargs={"overwrite": True},
            args=expand_config_args(args),
            run=run,
            recipes=recipe_files(args),
        )


def user_error(err: BaseException) -> BaseException | None:
    """The innermost error of the chain that wsss raised about the user's input, else None; a DataLoader
    worker's error counts as raised inside the one carrying it, and ``raise ... from None`` ends the chain."""
    found = None
    while err is not None:
        frames = traceback.extract_tb(err.__traceback__)
        for cause, filename in [(err, frames[-1].filename if frames else None), *worker_errors(err)]:
            raised_by_wsss = filename is not None and Path(filename).resolve().is_relative_to(PACKAGE)
            if raised_by_wsss and isinstance(cause, OSError | ValueError | ImportError):
                found = cause
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return found


def synthetic_hint(argv: list[str], err: BaseException) -> str:
    """Name the synthetic twin of the recipe when a missing dataset (not weights) stopped it."""
    dataset = isinstance(err, FileNotFoundError) and not isinstance(err, WeightsNotFoundError)
    if not dataset or "--config" not in argv[:-1]:
        return ""
    recipe = Path(argv[argv.index("--config") + 1])
    stem = recipe.stem
    for dataset in DATASET_SUFFIXES:
        stem = stem.removesuffix(dataset)
    twin = recipe.with_name(f"{stem}_synthetic.yaml")
    return f" Without the dataset, try {twin} (make train RECIPE={twin.stem})." if twin.is_file() else ""


def main(args: list[str] | None = None) -> None:
    """Entry point of ``wsss`` and ``python -m wsss``; errors in the user's input print as one clear line.

    Set ``WSSS_TRACEBACK=1`` to see the full traceback instead.
    """
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
        else:
            make_cli(argv)
    except Exception as err:
        cause = user_error(err)
        if cause is None or os.environ.get("WSSS_TRACEBACK"):
            raise
        print(f"wsss: error: {cause}{synthetic_hint(argv, cause)}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
