"""The IRN-style ResNet of CRT's CNN branch (Ahn et al. 2019, as adopted by Huo et al. 2023): a timm ResNet
with strides (2, 2, 2, 1) and no dilation (output stride 16), and IRN's frozen early stages."""

from pathlib import Path

from torch import nn

from wsss.models.backbones import create_cnn_features


def undilated_stride_one_last_stage(features: nn.Module) -> nn.Module:
    """Give the last stage of a timm ``features_only`` ResNet stride 1 without dilation, in place.

    The stride-2 convolutions of the stage become stride 1 (padding unchanged) and an average-pool shortcut
    (``avg_down`` ResNets) becomes the identity, as IRN's ``strides=(2, 2, 2, 1)``.
    """
    stage_name = features.feature_info.module_name()[-1].replace(".", "_")  # FeatureListNet's child name
    stage = features.get_submodule(stage_name)
    changed = 0
    for name, module in list(stage.named_modules()):
        if isinstance(module, nn.Conv2d) and tuple(module.stride) == (2, 2):
            if module.kernel_size[0] % 2 == 0 or module.dilation != (1, 1):
                raise ValueError(
                    f"undilated_stride_one_last_stage: {stage_name}.{name} is not an undilated odd-kernel "
                    "conv; pass a timm ResNet (or cnn_dilated=True for any timm CNN)"
                )
            module.stride = (1, 1)
            changed += 1
        elif isinstance(module, nn.AvgPool2d) and module.stride in (2, (2, 2)):
            stage.set_submodule(name, nn.Identity())
    if not changed:
        raise ValueError(
            f"undilated_stride_one_last_stage: the last stage {stage_name!r} has no stride-2 convolution; "
            "pass a timm ResNet (or cnn_dilated=True for any timm CNN)"
        )
    features.feature_info.info[-1]["reduction"] //= 2
    return features


def create_irn_resnet(
    name: str, in_channels: int = 3, weights: str | Path | None = None, dilated: bool = False
) -> nn.Module:
    """A timm ResNet returning its last feature map at output stride 16.

    ``dilated=False`` (IRN, CRT's official CNN): strides (2, 2, 2, 1) with no dilation. ``dilated=True``:
    timm's ``output_stride=16`` (the last stage dilated by 2; works for any timm CNN).
    """
    if dilated:
        return create_cnn_features(name, in_channels, 16, weights)
    return undilated_stride_one_last_stage(create_cnn_features(name, in_channels, 32, weights))


def freeze_to_stride_8(features: nn.Module) -> list[str]:
    """Freeze every module of a timm ``features_only`` CNN up to its stride-8 stage (IRN: conv1/bn1 frozen
    and the output of layer2 detached); returns the frozen top-level module names."""
    info = features.feature_info.info
    last = next((i["module"].replace(".", "_") for i in info if i["reduction"] == 8), None)
    if last is None:
        raise ValueError("freeze_to_stride_8: the CNN has no stage at stride 8; pass cnn_frozen=False")
    frozen = []
    for name, module in features.named_children():
        module.requires_grad_(False)
        frozen.append(name)
        if name == last:
            return frozen
    raise ValueError(f"freeze_to_stride_8: no top-level module {last!r} in the CNN; pass cnn_frozen=False")
