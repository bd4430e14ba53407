import math

import pytest
import torch
from torch import nn

from rewind import models
from rewind.errors import UserError


def test_resnet20_has_272474_parameters_and_the_recipe_structure():
    m = models.build("resnet20")
    assert sum(p.numel() for p in m.parameters()) == 272474
    assert m.conv.out_channels == 16 and m.conv.bias is None and m.conv.kernel_size == (3, 3)
    assert len(m.blocks) == 9
    widths = [b.conv2.out_channels for b in m.blocks]
    assert widths == [16] * 3 + [32] * 3 + [64] * 3
    strides = [b.conv1.stride[0] for b in m.blocks]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    for i, b in enumerate(m.blocks):
        if i in (3, 6):  # projection shortcut: 1x1 conv + BatchNorm on the input subsampled by 2
            conv, bn = b.shortcut
            assert conv.kernel_size == (1, 1) and b.stride == 2 and isinstance(bn, nn.BatchNorm2d)
        else:
            assert len(b.shortcut) == 0
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))
    assert m.fc.in_features == 64 and m.fc.out_features == 10 and m.fc.bias is not None
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_init_is_the_recipes():
    m = models.build("resnet20", seed=3)
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    gammas = torch.cat([b.weight.detach() for b in bns])
    assert gammas.min() >= 0 and gammas.max() <= 1 and 0.4 < gammas.mean() < 0.6  # U[0, 1]
    assert all(torch.all(b.bias == 0) for b in bns)
    w = m.blocks[8].conv2.weight.detach()  # kaiming normal, fan_in = 64 * 9
    assert abs(w.std().item() - math.sqrt(2 / (64 * 9))) < 0.005 and abs(w.mean().item()) < 0.005


def test_model_seed_alone_determines_init_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = models.build("resnet8", seed=1), models.build("resnet8", seed=1), models.build("resnet8", seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv.weight, c.conv.weight)


def test_prunable_weights_are_conv_and_linear_only():
    m = models.build("resnet20")
    names = models.prunable(m)
    assert "fc.weight" in names and "conv.weight" in names and "blocks.3.shortcut.0.weight" in names
    assert not any("bn" in n or n.endswith("bias") for n in names)
    assert sum(p.numel() for p in names.values()) == 272474 - 10 - 2 * sum(
        b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm2d))


def count(name: str, **kw) -> int:
    """Parameters of a model, built on the meta device (no memory, no init draws)."""
    s = models.spec(name)
    with torch.device("meta"):
        m = s.make(kw.get("width", s.default_width), kw.get("blocks", 0), kw.get("classes", 10),
                   kw.get("channels", 3), kw.get("size", 32))
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, kw, published", [
    ("resnet20", {}, 272_474),          # OpenLTH cifar_resnet_20
    ("resnet56", {}, 855_770),          # He et al. 2016: 0.85M; OpenLTH cifar_resnet_56
    ("resnet18", {}, 11_173_962),       # the standard CIFAR ResNet-18: 11.17M
    ("resnet18", {"width": 16}, 701_466),   # Ash & Adams' quarter width: 1/16 of the convs
    ("vgg16", {}, 14_728_266),          # OpenLTH cifar_vgg_16; Frankle et al. 2020: 14.7M
    ("vgg19", {}, 20_040_522),          # Frankle & Carbin 2019: 20M
    ("wrn16-8", {}, 10_961_370),        # Zagoruyko & Komodakis 2016: 11.0M
    ("wrn28-10", {}, 36_479_194),       # Zagoruyko & Komodakis 2016: 36.5M
    ("lenet300-100", {"channels": 1, "size": 28}, 266_610),  # Frankle & Carbin 2019
    ("mlp100-100", {}, 318_410),        # Ash & Adams's MLP: 3072*100+100 + 100*100+100 + 100*10+10
    ("allcnn", {}, 1_370_986),          # Springenberg et al. 2015: 1.3M (with BatchNorm in place of biases)
])
def test_parameter_counts_are_the_published_ones(name, kw, published):
    assert count(name, **kw) == published


def test_the_mlp_has_pytorch_s_init_and_lenet_openlth_s():
    """Ash & Adams's MLP (PyTorch's default init): first layer U(-1/sqrt(3072), 1/sqrt(3072)), std 0.0104;
    OpenLTH's kaiming normal gives lenet100-100 std sqrt(2/3072) = 0.0255."""
    mlp, lenet = models.build("mlp100-100", seed=0), models.build("lenet100-100", seed=0)
    bound = 1 / 3072 ** 0.5
    assert mlp.fc_layers[0].weight.abs().max() <= bound
    assert mlp.fc_layers[0].weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.02)
    assert lenet.fc_layers[0].weight.std().item() == pytest.approx((2 / 3072) ** 0.5, rel=0.02)
    assert models.head(mlp) == "fc" and mlp(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_is_the_cifar_variant_with_configurable_stages():
    m = models.build("resnet18")
    assert m.conv.kernel_size == (3, 3) and m.conv.stride == (1, 1)  # 3x3 stem, no max-pool
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    assert [m.blocks[i[0]].conv2.out_channels for i in m.stages] == [64, 128, 256, 512]
    assert [b.stride for b in m.blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    deep = models.build("resnet18", width=16, blocks=3)  # Berariu et al.'s depth sweep: d blocks per stage
    assert [len(r) for r in deep.stages] == [3, 3, 3, 3] and deep.fc.in_features == 128
    # PyTorch's default init (the warm-start papers' code): BatchNorm gamma 1, not U[0, 1].
    assert all(torch.all(b.weight == 1) for b in m.modules() if isinstance(b, nn.BatchNorm2d))


def test_every_model_takes_the_datasets_shape_and_classes():
    for name, kw in [("lenet300-100", {}), ("vgg11", {"width": 8}), ("resnet18", {"width": 4}), ("wrn10-1", {}),
                     ("allcnn", {"width": 8}), ("resnet8", {"width": 4})]:
        m = models.build(name, num_classes=7, in_channels=1, image_size=28, **kw)
        assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 7), name
        assert models.head(m) in ("fc", "head")


def test_model_names_and_settings_are_checked():
    assert models.build("resnet20", width=32).conv.out_channels == 32
    assert models.resolved_width("resnet20") == 16 and models.resolved_width("vgg16") == 64
    for name, kw, message in [("resnet21", {}, "unknown model 'resnet21'"), ("vgg15", {}, "unknown model"),
                              ("wrn16-8", {"width": 4}, "takes no --width"), ("vgg16", {"blocks": 3}, "resnet18 only"),
                              ("lenet300-0", {}, "unknown model")]:
        with pytest.raises(UserError, match=message):
            models.build(name, **kw)


def test_strided_shortcut_is_a_stride_2_projection():
    """Subsample, then a 1x1 conv: exactly the 1x1 stride-2 conv of the recipe (float64)."""
    block = models.resnet.Block(4, 8, downsample=True).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    conv, bn = block.shortcut
    reference = bn(torch.nn.functional.conv2d(x, conv.weight, stride=2))
    assert torch.allclose(block.shortcut(x[:, :, ::2, ::2]), reference, rtol=0, atol=1e-12)


_GRADIENTS = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from rewind import models
def grads(channels_last):
    m = models.build("resnet8", width=4, seed=0)
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    m(x).square().mean().backward()
    return [p.grad for p in m.parameters()]
worst = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads(True), grads(False)))
print(worst)
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_narrow_channels_last_resnet_has_correct_gradients(threads):
    """A ResNet whose strided shortcut reads 4 channels, channels-last on the CPU (as rewind trains):
    its gradients equal the NCHW ones. The 1x1 stride-2 oneDNN kernel got them wrong, hung or
    crashed here on AVX2 machines (uxlfoundation/oneDNN#6035), so this runs in its own process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _GRADIENTS, str(threads)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert float(out.stdout) < 1e-3  # the broken kernel: errors of order 1
