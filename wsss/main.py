"""The ``wsss`` command line: LightningCLI (fit, validate, test, predict) + extra commands."""

import importlib
import os
import sys
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time

import lightning as L
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from wsss.data.base import WSSSDataModule
from wsss.recipes import expand_config_args
from wsss.trainer import Trainer

PACKAGE = Path(__file__).resolve().parent
DATASET_SUFFIXES = ("_voc", "_coco", "_cub", "_dfc2020")
EXTRA_COMMANDS = {
    "synth": "wsss.data.synthetic",
    "demo": "wsss.demo",
    "sweep": "wsss.sweep",
    "resume": "wsss.resume",
    "affinity-labels": "wsss.pseudo.confident",
}


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
    """

    def add_arguments_to_parser(self, parser) -> None:
        """Every model takes ``num_classes`` and ``in_channels`` from the data; last.ckpt is always kept."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """A wsss ``WandbLogger`` without ``save_dir`` writes into ``trainer.default_root_dir``."""
        trainer = (self.config[self.subcommand] if self.subcommand else self.config).trainer
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            is_wandb = getattr(logger, "class_path", None) == "wsss.loggers.WandbLogger"
            if is_wandb and not logger.init_args.save_dir:
                logger.init_args.save_dir = trainer.default_root_dir or os.getcwd()

    def before_predict(self) -> None:
        """Refuse a prediction that would write nothing: the command line keeps no returned predictions."""
        if not any(isinstance(c, BasePredictionWriter) for c in self.trainer.callbacks):
            raise ValueError(
                "wsss predict: no prediction writer in trainer.callbacks, so nothing would be saved; add "
                "one, e.g. --trainer.callbacks+=wsss.callbacks.PseudoMaskWriter "
                "--trainer.callbacks.init_args.output_dir=DIR (LocalisationBoxWriter for WSOL)"
            )

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The trainer with the ``checkpoint`` callback, unless ``trainer.enable_checkpointing`` is false."""
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        keys = self._parser(self.subcommand).callback_keys
        if trainer_config.get("enable_checkpointing") is False:
            keys = [key for key in keys if key != "checkpoint"]
        return self._instantiate_trainer(trainer_config, [self._get(self.config_init, key) for key in keys])


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
        )


def user_error(err: BaseException) -> BaseException | None:
    """The innermost error of the chain that wsss raised about the user's input, else None."""
    found = None
    while err is not None:
        frames = traceback.extract_tb(err.__traceback__)
        raised_by_wsss = bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)
        if raised_by_wsss and isinstance(err, OSError | ValueError | ImportError):
            found = err
        err = err.__cause__ or err.__context__
    return found


def synthetic_hint(argv: list[str], err: BaseException) -> str:
    """Name the synthetic twin of the recipe when a missing dataset stopped it."""
    if not isinstance(err, FileNotFoundError) or "--config" not in argv[:-1]:
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
