"""Loggers: Weights & Biases that works with no account and no network."""

import os

from lightning.pytorch.loggers import WandbLogger as _WandbLogger


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger, offline unless ``WANDB_MODE`` asks for ``online`` or ``offline`` is given.

    From the ``wsss`` command line, an unset ``save_dir`` becomes ``trainer.default_root_dir``, so that the
    wandb files, ``config.yaml`` and the checkpoints (``<save_dir>/<project>/<run id>/checkpoints``) of a
    recipe stay in its run folder, where ``wsss resume`` looks.
    """

    def __init__(self, save_dir: str | None = None, offline: bool | None = None, **kwargs) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") not in ("online", "run")
        super().__init__(save_dir=save_dir, offline=offline, **kwargs)
