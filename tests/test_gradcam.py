"""Grad-CAM for timm CNNs and ViTs through the grad-cam package."""

import torch

from wsss.methods.gradcam import GradCAMClassifier, get_submodule


def test_negative_indices_in_layer_paths():
    model = GradCAMClassifier(model="vit_tiny_patch16_224", num_classes=2)
    assert get_submodule(model.model, "blocks.-1.norm1") is model.model.blocks[-1].norm1
    assert model.target_layer is model.model.blocks[-1].norm1


def test_cnn_gradcam_maps_in_unit_range_zero_for_absent_classes():
    model = GradCAMClassifier(model="resnet18", num_classes=3).eval()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    cams = model.cams(torch.randn(2, 3, 64, 64), labels)
    assert cams.shape == (2, 3, 64, 64)
    assert cams.min() >= 0 and cams.max() <= 1
    assert torch.all(cams[0, 1] == 0) and torch.all(cams[1, 0] == 0) and torch.all(cams[1, 2] == 0)
    assert all(p.grad is None for p in model.parameters())


def test_vit_gradcam_inside_inference_mode_matches_a_manual_gradcam():
    torch.manual_seed(0)
    model = GradCAMClassifier(model="vit_tiny_patch16_224", num_classes=2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        cams = model.cams(x, torch.tensor([[0.0, 1.0]]))
    # Independent Grad-CAM: weights = spatial mean of d logit_1 / d activation, map = ReLU(sum_c w_c A_c).
    acts = {}
    handle = model.model.blocks[-1].norm1.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    logit = model.model(x)[0, 1]
    handle.remove()
    grad = torch.autograd.grad(logit, acts["a"])[0][:, 1:].reshape(1, 4, 4, -1)
    a = acts["a"][:, 1:].reshape(1, 4, 4, -1)
    manual = torch.relu((grad.mean((1, 2), keepdim=True) * a).sum(-1))[0].detach()
    manual = torch.nn.functional.interpolate(manual[None, None], size=(64, 64), mode="bilinear")[0, 0]
    manual = (manual - manual.min()) / (manual.max() - manual.min())
    assert torch.all(cams[0, 0] == 0)
    assert torch.corrcoef(torch.stack([cams[0, 1].flatten(), manual.flatten()]))[0, 1] > 0.95
