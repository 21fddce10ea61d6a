"""Checkpoints that are whole or absent: written atomically in their own folder, checked before a resume."""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from wsss.atomic import atomic_write

#: what a checkpoint needs to continue training (a weights-only checkpoint lacks the last two)
TRAINING_STATE = ("state_dict", "loops", "optimizer_states")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but each local checkpoint is written atomically beside its target.

    Lightning writes into a temporary file in the system's temp folder and moves it; across file systems the
    move is a copy into the final name, so a full disk left a truncated ``last.ckpt``. Here the temporary
    file is in the checkpoint's folder, fsynced, then renamed: the old checkpoint stays until the new one is
    complete, and a full disk raises an error naming the folder. Remote paths (``s3://``...) go to Lightning.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically (creating its folder)."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda file: torch.save(checkpoint, file))


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot continue a training run (it does not load, or holds weights only); None if it can.

    The file is memory-mapped, so the check reads the archive's index and the pickled state, not every tensor.
    """
    if Path(path).stat().st_size == 0:
        return "is empty"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # a truncated or corrupt file raises many kinds of errors, all mean "unusable"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"does not load ({reason})"
    missing = [key for key in TRAINING_STATE if not isinstance(state, dict) or key not in state]
    if missing:
        return f"holds no training state ({', '.join(missing)} missing; saved with weights only?)"
    return None
