"""Grad-CAM (Selvaraju et al. 2017) for any timm classifier, through the ``grad-cam`` package."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.methods.base import WSSSMethod
from wsss.models.backbones import create_timm_model


def default_target_layer(model: nn.Module) -> str:
    """The layer Grad-CAM reads: the last block's first norm for ViTs, the last stage for CNNs."""
    if hasattr(model, "blocks"):
        return "blocks.-1.norm1"
    if hasattr(model, "stages"):
        return "stages.-1"
    if hasattr(model, "layer4"):
        return "layer4"
    raise ValueError(f"cannot guess a Grad-CAM target layer for {type(model).__name__}; pass target_layer")


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """``model.get_submodule`` that also accepts negative indices such as ``blocks.-1.norm1``."""
    module = model
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


def token_reshape(model: nn.Module, grid: tuple[int, int]):
    """A reshape transform for ViT activations (B, prefix + N, C) -> (B, C, h, w), dropping prefix tokens."""
    prefix = getattr(model, "num_prefix_tokens", 1)

    def reshape(tokens: Tensor) -> Tensor:
        return tokens[:, prefix:].reshape(tokens.shape[0], *grid, tokens.shape[-1]).permute(0, 3, 1, 2)

    return reshape


def gradcam_maps(
    model: nn.Module,
    target_layer: nn.Module,
    images: Tensor,
    classes: Sequence[int],
    num_classes: int,
    token_grid: tuple[int, int] | None = None,
) -> Tensor:
    """Grad-CAM maps (B, K, H, W) in [0, 1] for ``classes``; the other channels are zero.

    Works inside Lightning's inference mode: the input is cloned into a normal tensor with gradients on.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    b, _, h, w = images.shape
    reshape = token_reshape(model, token_grid) if token_grid is not None else None
    with torch.inference_mode(False), torch.enable_grad():
        x, maps = images.clone(), images.new_zeros(b, num_classes, h, w)
        with GradCAM(model=model, target_layers=[target_layer], reshape_transform=reshape) as cam:
            for k in classes:
                maps[:, k] = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * b))
    model.zero_grad(set_to_none=True)
    return maps


class GradCAMClassifier(WSSSMethod):
    """A timm classifier trained with the multi-label soft-margin loss; CAMs from Grad-CAM.

    ``target_layer`` is a dotted path (negative indices allowed); by default the last block's ``norm1``
    for ViTs (the grad-cam package's recipe for DeiT) and the last stage for CNNs.

    Multi-scale fusion sums the views' Grad-CAMs (flips undone at the image size) and divides each class by
    (max + 1e-5) once. The grad-cam package min–max normalises every view's map itself, so these are the
    per-view maps that are summed (there is no official multi-scale code for this baseline).
    """

    def __init__(
        self,
        model: str = "resnet50",
        weights: str | None = None,
        target_layer: str | None = None,
        num_classes: int = 20,
        in_channels: int = 3,
        bg_threshold: float = 0.15,
        cam_scales: Sequence[float] = (1.0,),
        cam_flip: bool = False,
        **optim,
    ) -> None:
        super().__init__(num_classes, in_channels, bg_threshold, cam_scales, cam_flip, **optim)
        kwargs = {"dynamic_img_size": True} if model.startswith(("vit", "deit")) else {}
        self.model = create_timm_model(
            model, weights, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
        self.target_layer_name = target_layer or default_target_layer(self.model)
        self.target_layer = get_submodule(self.model, self.target_layer_name)

    def classify(self, images: Tensor) -> Tensor:
        """Image-level logits (B, K)."""
        return self.model(images)

    def cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """Grad-CAM of each labelled class (every class when no labels), at the input resolution."""
        if cls_labels is None:
            cls_labels = torch.ones(images.shape[0], self.num_classes, device=images.device)
        classes = cls_labels.amax(0).nonzero().flatten().tolist()
        grid = None
        if hasattr(self.model, "patch_embed"):
            grid = self.model.patch_embed.dynamic_feat_size(images.shape[-2:])
        maps = gradcam_maps(self.model, self.target_layer, images, classes, self.num_classes, grid)
        return maps * cls_labels[:, :, None, None]

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Multi-label soft-margin classification loss."""
        return {"loss": F.multilabel_soft_margin_loss(self.classify(batch["image"]), batch["cls_labels"])}
