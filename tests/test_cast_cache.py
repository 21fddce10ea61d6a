"""Linear layers that keep their autocast casts through an inference loop give bit-identical outputs."""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from wsss.methods.mctformer import MCTformer
from wsss.models.cast_cache import CastCachingLinear, cache_cast_weights, drop_cast_weights

TINY = dict(backbone="vit_tiny_patch16_224", img_size=32, drop_path_rate=0.0, cam_flip=True,
            backbone_kwargs=dict(patch_size=8, depth=3, embed_dim=32, num_heads=2))


def bf16_inference(model: nn.Module, *args):
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        return model(*args)


def test_cached_casts_equal_autocast_and_follow_weight_changes():
    torch.manual_seed(0)
    layer, x = nn.Linear(24, 40), torch.randn(3, 7, 24)
    expected = bf16_inference(layer, x)
    state = dict(layer.state_dict())
    cache_cast_weights(nn.Sequential(layer))
    assert isinstance(layer, CastCachingLinear) and layer.state_dict().keys() == state.keys()
    for _ in range(2):  # the first call makes the copies, the second reads them
        assert torch.equal(bf16_inference(layer, x), expected)
    assert layer._cast_cache[1].dtype == torch.bfloat16
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # an in-place update bumps the version: the copies are remade
    fresh = nn.Linear(24, 40)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(bf16_inference(layer, x), bf16_inference(fresh, x))
    drop_cast_weights(layer)
    assert not hasattr(layer, "_cast_cache")


def test_outside_inference_mode_the_layer_is_nn_linear_with_gradients():
    torch.manual_seed(0)
    layer = nn.Linear(8, 5)
    cache_cast_weights(layer)
    x = torch.randn(4, 8)
    with torch.autocast("cpu", torch.bfloat16):
        layer(x).float().sum().backward()
    assert layer.weight.grad is not None and not hasattr(layer, "_cast_cache")


class Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(3, 3, 37, 45, generator=generator)  # odd sizes: views at several grids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        labels = torch.tensor([1.0, 0.0, 1.0])
        return {"image": self.images[i], "cls_labels": labels, "name": f"img_{i}"}


def test_bf16_predict_loop_is_bit_identical_with_the_cache_and_frees_it():
    torch.manual_seed(0)
    model = MCTformer(version="v2", num_classes=3, cam_scales=[1.0, 0.5, 1.5], **TINY)
    images = Images()
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        model.eval()
        expected = [model.multiscale_cams(images[i]["image"][None], images[i]["cls_labels"][None])
                    for i in range(len(images))]
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    cached = []  # whether a block's layer ran on its cached copies, call by call
    model.net.vit.blocks[-1].mlp.fc2.register_forward_hook(
        lambda module, inputs, output: cached.append(hasattr(module, "_cast_cache")))
    predictions = trainer.predict(model, DataLoader(images, batch_size=1))
    for got, want in zip(predictions, expected, strict=True):
        assert torch.equal(got["cams"], want)
    assert len(cached) == 3 * 3 * 2 and all(cached)  # images x scales x flips
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is CastCachingLinear for m in linears)
    assert not any(hasattr(m, "_cast_cache") for m in linears)  # freed at the end of the loop
