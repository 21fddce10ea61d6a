"""The Trainer of the ``wsss`` command line: Lightning's, with batch limits that keep integers integers."""

from typing import Any

import lightning as L


class Trainer(L.Trainer):
    """Lightning's Trainer; ``limit_*_batches`` and ``val_check_interval`` parse ``1`` as one batch.

    Lightning types them ``float | int``, so the command line read ``--trainer.limit_predict_batches=1`` as
    1.0, i.e. 100 % of the batches. Here an integer is a batch count and a decimal a fraction, as in Python.
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
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            val_check_interval=val_check_interval,
            **kwargs,
        )
