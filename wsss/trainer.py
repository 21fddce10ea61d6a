"""The Trainer of the ``wsss`` command line: Lightning's, with batch limits that keep integers integers."""

from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import CheckpointIO

from wsss.checkpointing import AtomicCheckpointIO


class Trainer(L.Trainer):
    """Lightning's Trainer; ``limit_*_batches`` and ``val_check_interval`` parse ``1`` as one batch.

    Lightning types them ``float | int``, so the command line read ``--trainer.limit_predict_batches=1`` as
    1.0, i.e. 100 % of the batches. Here an integer is a batch count and a decimal a fraction, as in Python.

    Checkpoints are written with :class:`~wsss.checkpointing.AtomicCheckpointIO` unless ``plugins`` or the
    strategy name another ``CheckpointIO``.
    """

    def __init__(
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        val_check_interval: int | float | None = None,
        **kwargs: Any,
    ) -> None:
        plugins = kwargs.pop("plugins", None)
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        strategy_io = getattr(kwargs.get("strategy"), "_checkpoint_io", None)
        if strategy_io is None and not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        super().__init__(
            plugins=plugins,
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            val_check_interval=val_check_interval,
            **kwargs,
        )
