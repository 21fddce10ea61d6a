"""Loggers: Weights & Biases that works with no account and no network."""

import os

from lightning.pytorch.loggers import WandbLogger as _WandbLogger


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger, offline unless ``WANDB_MODE`` asks for ``online`` or ``offline`` is given."""

    def __init__(self, offline: bool | None = None, **kwargs) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") not in ("online", "run")
        super().__init__(offline=offline, **kwargs)
