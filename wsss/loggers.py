"""Loggers: Weights & Biases that works with no account and no network."""

import os

from lightning.pytorch.loggers import WandbLogger as _WandbLogger


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger, offline unless ``WANDB_MODE`` asks for ``online`` or ``offline`` is given.

    wandb's own files go below ``save_dir``; checkpoints go below the trainer's ``default_root_dir``
    (``<root>/<project>/<run id>/checkpoints``), where ``wsss resume`` looks for them, instead of below the
    shared ``save_dir`` where Lightning would put them.
    """

    def __init__(self, offline: bool | None = None, **kwargs) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") not in ("online", "run")
        super().__init__(offline=offline, **kwargs)

    @property
    def save_dir(self) -> None:
        """None, so that Lightning places checkpoints and ``trainer.log_dir`` below ``default_root_dir``."""
        return None
