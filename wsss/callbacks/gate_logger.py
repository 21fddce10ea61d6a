"""Log the head gates of a gated ViT: open heads per layer, the sparsity rate and a heads x layers heatmap."""

import json
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger


class GateLogger(L.Callback):
    """After every training epoch log ``gates/open_layer_<l>`` (open heads of layer l) and
    ``gates/sparsity_rate`` (fraction of closed heads, evaluation gates); every ``every_n_epochs`` epochs
    save ``<log dir>/gates/epoch_XXX.png``, a heads x layers heatmap of P(gate open), and its history of
    probabilities in ``<log dir>/gates/history.json`` (also logged to wandb as an image).

    Uses the module's public API only: ``gate_probabilities()`` and ``open_heads()`` (layers, heads).
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"GateLogger: every_n_epochs must be at least 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.history: dict[int, list[list[float]]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a module without gate probabilities."""
        if not (hasattr(pl_module, "gate_probabilities") and hasattr(pl_module, "open_heads")):
            raise ValueError(f"GateLogger needs gate_probabilities() and open_heads(); "
                             f"{type(pl_module).__name__} has no head gates")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the open-head counts and the sparsity rate; draw the heatmap every ``every_n_epochs``."""
        open_heads = pl_module.open_heads()
        metrics = {f"gates/open_layer_{i}": float(n) for i, n in enumerate(open_heads.sum(1).tolist())}
        metrics["gates/sparsity_rate"] = 1.0 - float(open_heads.float().mean())
        pl_module.log_dict(metrics, on_epoch=True)
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        probabilities = pl_module.gate_probabilities().numpy()
        self.history[epoch] = probabilities.tolist()
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "gates"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch_{epoch:03d}.png"
        title = f"epoch {epoch}: {metrics['gates/sparsity_rate']:.0%} heads closed"
        draw_gate_heatmap(probabilities, title, path)
        (folder / "history.json").write_text(json.dumps(self.history))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="gate_probabilities", images=[str(path)], step=trainer.global_step)


def draw_gate_heatmap(probabilities: np.ndarray, title: str, path: Path) -> None:
    """Save a heads (rows) x layers (columns) heatmap of P(gate open) in [0, 1] (needs the ``viz`` extra)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("GateLogger draws with matplotlib: pip install 'wsss[viz]'") from err
    layers, heads = probabilities.shape
    fig = Figure(figsize=(1.5 + 0.35 * layers, 1.0 + 0.3 * heads))
    ax = fig.subplots()
    image = ax.imshow(probabilities.T, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label="P(open)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
