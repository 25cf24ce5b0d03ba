"""alignlab.models: every reference model builds, runs, has the paper's shape and size, and
converts to feedback alignment."""

import copy
import math

import pytest
import torch
from torch import nn

import alignlab
from alignlab import models
from alignlab.models import NORMS, build, names
from alignlab.models.norm import ChannelRMSNorm, FeatureBatchNorm, make_norm
from alignlab.models.resnet_block import ZeroPadShortcut

NAMES = ["mlp", "lenet", "plaincnn", "arch1", "resnet20", "resnet32", "resnet56", "resnet18", "vit"]
SHAPES = {"mlp": (1, 28, 28), "lenet": (1, 28, 28), "plaincnn": (1, 28, 28), "arch1": (3, 24, 24), "resnet20": (3, 32, 32),
          "resnet32": (3, 32, 32), "resnet56": (3, 32, 32), "resnet18": (3, 32, 32), "vit": (3, 32, 32)}
CLASSES = 7  # not 10, so a hard-coded 10 anywhere shows

# every module type that normalises activity, whatever the norm option
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, ChannelRMSNorm,
              nn.LocalResponseNorm, nn.InstanceNorm2d)
# hidden layers that get a norm, per model at its defaults: mlp 2 hidden layers; lenet and arch1
# 2 convs + 2 hidden FCs; plaincnn 4 convs; CIFAR ResNet-(6n+2) stem + 2 per block (3n blocks, option A adds none);
# ResNet-18 stem + 2·8 blocks + 3 projection shortcuts (option B); vit 2 per block · 4 + final
NORM_COUNT = {"mlp": 2, "lenet": 4, "plaincnn": 4, "arch1": 4, "resnet20": 19, "resnet32": 31, "resnet56": 55,
              "resnet18": 20, "vit": 9}
# (conv-map norms, vector norms) per model
SPLIT = {"mlp": (0, 2), "lenet": (2, 2), "plaincnn": (4, 0), "arch1": (2, 2), "resnet20": (19, 0), "resnet32": (31, 0),
         "resnet56": (55, 0), "resnet18": (20, 0), "vit": (0, 9)}
KIND_TYPES = {"batch": (nn.BatchNorm2d, FeatureBatchNorm), "layer": (nn.GroupNorm, nn.LayerNorm),
              "rms": (ChannelRMSNorm, nn.RMSNorm)}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def norm_modules(model):
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def last_linear(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_names():
    assert names() == NAMES
    assert NORMS == ("none", "batch", "layer", "rms")


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", NAMES)
def test_builds_runs_and_backpropagates(name, norm):
    torch.manual_seed(0)
    model = build(name, in_shape=SHAPES[name], num_classes=CLASSES, norm=norm)
    seen = {}
    last_linear(model).register_forward_hook(lambda m, i, o: seen.update(head=o))
    out = model(torch.randn(3, *SHAPES[name]))
    assert out.shape == (3, CLASSES)
    assert out is seen["head"]  # the output layer's own output: no norm (or anything) after it
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # the norm option put exactly its kind of module on every hidden layer, and only there
    found = norm_modules(model)
    if norm == "none":
        assert found == []
    else:
        conv_type, vec_type = KIND_TYPES[norm]
        assert len(found) == NORM_COUNT[name]
        assert (sum(type(m) is conv_type for m in found), sum(type(m) is vec_type for m in found)) == SPLIT[name]


def test_default_norms():
    assert norm_modules(build("resnet20", in_shape=(3, 32, 32), num_classes=10)) == []
    assert norm_modules(build("mlp", in_shape=(784,), num_classes=10)) == []
    vit = build("vit", in_shape=(3, 32, 32), num_classes=10)
    assert [type(m) for m in norm_modules(vit)] == [nn.LayerNorm] * 9
    assert models.default_norm("vit") == "layer" and models.default_norm("lenet") == "none"


# ---- sizes: exact parameter counts, computed by hand from each architecture ----------------

def test_cifar_resnet_parameter_counts_match_the_paper():
    # ResNet-(6n+2), option A, batch norm (convs without bias), 10 classes. Weights of a 3×3
    # conv: 9·in·out; a BN layer: 2·C. Stem 9·3·16 + 32 = 464. Stage 1: 2n convs 16→16 (2304)
    # and 2n BNs (32). Stage 2: one 16→32 (4608), 2n−1 32→32 (9216), 2n BNs (64). Stage 3: one
    # 32→64 (18432), 2n−1 64→64 (36864), 2n BNs (128). FC 64·10 + 10 = 650.
    def count(n):
        return (464 + 2 * n * (2304 + 32) + 4608 + (2 * n - 1) * 9216 + 2 * n * 64
                + 18432 + (2 * n - 1) * 36864 + 2 * n * 128 + 650)

    assert count(3) == 269_722 and count(5) == 464_154 and count(9) == 853_018  # 0.27M, 0.46M, 0.85M
    for name, n in (("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        assert n_params(build(name, in_shape=(3, 32, 32), num_classes=10, norm="batch")) == count(n)
    # option B adds two projections: 1×1 conv 16→32 (512) + BN (64), 32→64 (2048) + BN (128)
    assert n_params(build("resnet20", in_shape=(3, 32, 32), num_classes=10, norm="batch",
                          shortcut="B")) == 269_722 + 512 + 64 + 2048 + 128
    # layer norm (GroupNorm, 2·C) and rms (gain C + conv bias C) cost what BN costs; no norm
    # drops the 1376 BN parameters (32 + 6·32 + 6·64 + 6·128) and adds 688 conv biases
    # (16 + 6·16 + 6·32 + 6·64)
    for norm, expected in (("layer", 269_722), ("rms", 269_722), ("none", 269_722 - 1376 + 688)):
        assert n_params(build("resnet20", in_shape=(3, 32, 32), num_classes=10, norm=norm)) == expected


def test_resnet18_parameter_counts():
    # ImageNet form, 1000 classes: torchvision's resnet18 has 11,689,512 parameters. Stem conv
    # 7·7·3·64 = 9408 + BN 128; stages: 64: 4 convs 36864 + 4 BN 128; 128: 73728 + 3·147456
    # + proj 8192 + 5 BN 256; 256: 294912 + 3·589824 + proj 32768 + 5 BN 512; 512: 1179648
    # + 3·2359296 + proj 131072 + 5 BN 1024; FC 512·1000 + 1000.
    stages = (4 * 36864 + 4 * 128) + (73728 + 3 * 147456 + 8192 + 5 * 256) \
        + (294912 + 3 * 589824 + 32768 + 5 * 512) + (1179648 + 3 * 2359296 + 131072 + 5 * 1024)
    imagenet = 9408 + 128 + stages + 512 * 1000 + 1000
    assert imagenet == 11_689_512
    assert n_params(build("resnet18", in_shape=(3, 224, 224), num_classes=1000, norm="batch")) == imagenet
    # small stem: conv 3·3·3·64 = 1728 + BN 128, FC 512·10 + 10
    small = 1728 + 128 + stages + 5130
    assert small == 11_173_962
    assert n_params(build("resnet18", in_shape=(3, 32, 32), num_classes=10, norm="batch")) == small


def test_small_model_parameter_counts():
    # mlp 784-256-256-10: 784·256+256 + 256·256+256 + 256·10+10
    assert n_params(build("mlp", in_shape=(1, 28, 28), num_classes=10)) == 200_960 + 65_792 + 2_570
    # LeNet-5: conv 1→6 5×5 (156), conv 6→16 5×5 (2416), FC 400→120 (48120), 120→84 (10164), 84→10 (850)
    assert n_params(build("lenet", in_shape=(1, 28, 28), num_classes=10)) == 61_706
    # Arch 1 on 24×24: conv 3→64 5×5 (4864), 64→64 5×5 (102464), FC 64·6·6=2304→384 (885120),
    # 384→192 (73920), 192→10 (1930)
    assert n_params(build("arch1", in_shape=(3, 24, 24), num_classes=10)) == 1_068_298
    # ViT 32×32, patch 4, dim 128: patch conv 3·16·128+128 = 6272, class token 128, positions
    # 65·128 = 8320; per block 2 LN (512), in_proj 3·128·128+384 (49536), out_proj 16512, MLP
    # 128·256+256 (33024) and 256·128+128 (32896) = 132480, ·4; final LN 256; head 1290
    assert n_params(build("vit", in_shape=(3, 32, 32), num_classes=10)) == \
        6272 + 128 + 8320 + 4 * 132_480 + 256 + 1290


# ---- architectures -------------------------------------------------------------------------

def test_mlp_flattens_any_shape_and_follows_its_options():
    flat = build("mlp", in_shape=(784,), num_classes=10, depth=3, width=64, activation="tanh")
    image = build("mlp", in_shape=(1, 28, 28), num_classes=10, depth=3, width=64, activation="tanh")
    assert n_params(flat) == n_params(image)
    assert [m.out_features for m in flat if isinstance(m, nn.Linear)] == [64, 64, 64, 10]
    assert sum(isinstance(m, nn.Tanh) for m in flat) == 3
    assert image(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # each hidden layer is Linear → norm → activation, in that order
    kinds = [type(m) for m in build("mlp", in_shape=(5,), num_classes=2, norm="layer", depth=1)]
    assert kinds == [nn.Flatten, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]


@pytest.mark.parametrize("shape, padding, flat", [((1, 28, 28), 2, 400), ((1, 32, 32), 0, 400),
                                                  ((3, 64, 64), 0, 16 * 13 * 13)])
def test_lenet_layers(shape, padding, flat):
    net = build("lenet", in_shape=shape, num_classes=10)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert convs[0].padding == (padding, padding) and convs[0].in_channels == shape[0]
    assert [f.out_features for f in fcs] == [120, 84, 10]
    assert fcs[0].in_features == flat
    assert sum(isinstance(m, nn.MaxPool2d) for m in net) == 2
    assert net(torch.randn(2, *shape)).shape == (2, 10)


def test_arch1_layers():
    net = build("arch1", in_shape=(3, 24, 24), num_classes=10)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(64, (5, 5))] * 2
    pools = [m for m in net if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 2
    assert [(f.in_features, f.out_features) for f in net if isinstance(f, nn.Linear)] == \
        [(2304, 384), (384, 192), (192, 10)]
    assert build("arch1", in_shape=(3, 32, 32), num_classes=10).fc1.in_features == 64 * 8 * 8
    lrn = build("arch1", in_shape=(3, 24, 24), num_classes=10, lrn=True)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in lrn) == 2
    assert lrn(torch.randn(2, 3, 24, 24)).shape == (2, 10)


@pytest.mark.parametrize("depth, pools, sizes", [(1, (1,), [14]), (2, (1, 2), [14, 7]), (4, (1, 3), [14, 14, 7, 7]),
                                                  (8, (1, 5), [14] * 4 + [7] * 4)])
def test_plaincnn_depth_pools_and_resolution(depth, pools, sizes):
    net = build("plaincnn", in_shape=(1, 28, 28), num_classes=10, depth=depth, width=8)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == \
        [(1, 8, (3, 3), (1, 1))] + [(8, 8, (3, 3), (1, 1))] * (depth - 1)
    assert tuple(int(n[4:]) for n, m in net.named_children() if isinstance(m, nn.MaxPool2d)) == pools
    seen = []
    for i in range(1, depth + 1):
        getattr(net, f"act{i}").register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [s // 2 if i + 1 in pools else s for i, s in enumerate(seen)] == sizes
    assert not any(isinstance(m, nn.Linear) for m in list(net)[:-1])  # one Linear: the head


@pytest.mark.parametrize("depth, features", [(1, 8 * 14 * 14), (4, 8 * 7 * 7), (8, 8 * 7 * 7)])
def test_plaincnn_flatten_head_sees_every_position(depth, features):
    net = build("plaincnn", in_shape=(1, 28, 28), num_classes=10, depth=depth, width=8, head="flatten")
    assert not hasattr(net, "gap") and net.head.in_features == features
    x = torch.randn(2, 1, 28, 28)
    assert net(x).shape == (2, 10)
    gap = build("plaincnn", in_shape=(1, 28, 28), num_classes=10, depth=depth, width=8)
    assert gap.head.in_features == 8 and isinstance(gap.gap, nn.AdaptiveAvgPool2d)


@pytest.mark.parametrize("name, depth", [("resnet20", 20), ("resnet32", 32), ("resnet56", 56)])
def test_cifar_resnet_depth_widths_and_strides(name, depth):
    net = build(name, in_shape=(3, 32, 32), num_classes=10)
    weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth  # option A: every weighted layer is on the main path
    assert net.conv1.out_channels == 16
    sizes = {}
    for stage in ("layer1", "layer2", "layer3"):
        getattr(net, stage).register_forward_hook(lambda m, i, o, s=stage: sizes.update({s: o.shape[1:]}))
    net(torch.randn(2, 3, 32, 32))
    assert sizes == {"layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)}
    assert [b.conv1.stride for b in net.layer2] == [(2, 2)] + [(1, 1)] * (len(net.layer2) - 1)
    assert isinstance(net.layer2[0].shortcut, ZeroPadShortcut)
    b = build(name, in_shape=(3, 32, 32), num_classes=10, shortcut="B")
    projections = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(p.in_channels, p.out_channels, p.stride) for p in projections] == [(16, 32, (2, 2)), (32, 64, (2, 2))]


def test_zero_pad_shortcut_is_subsampled_identity_plus_zero_channels():
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


def test_resnet_convs_use_he_initialisation():
    torch.manual_seed(0)
    net = build("resnet18", in_shape=(3, 32, 32), num_classes=10)
    w = net.layer4[1].conv2.weight  # 512·512·9 weights: N(0, 2 / (9·512))
    assert abs(w.std().item() / math.sqrt(2 / (9 * 512)) - 1) < 0.01
    assert abs(w.mean().item()) < 1e-3


def test_resnet18_stems():
    small = build("resnet18", in_shape=(3, 32, 32), num_classes=10)
    assert small.stem.conv.kernel_size == (3, 3) and small.stem.conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.modules())
    assert [s[0].conv1.out_channels for s in (small.layer1, small.layer2, small.layer3, small.layer4)] == \
        [64, 128, 256, 512]
    assert all(len(s) == 2 for s in (small.layer1, small.layer2, small.layer3, small.layer4))
    big = build("resnet18", in_shape=(3, 96, 96), num_classes=10, norm="batch")
    assert big.stem.conv.kernel_size == (7, 7) and big.stem.conv.stride == (2, 2)
    assert isinstance(big.stem.pool, nn.MaxPool2d)
    assert big(torch.randn(2, 3, 96, 96)).shape == (2, 10)
    forced = build("resnet18", in_shape=(3, 32, 32), num_classes=10, stem="imagenet")
    assert forced.stem.conv.kernel_size == (7, 7)


def test_vit_structure():
    vit = build("vit", in_shape=(3, 32, 32), num_classes=10)
    assert vit.patch_embed.kernel_size == vit.patch_embed.stride == (4, 4)
    assert vit.pos_embed.shape == (1, 8 * 8 + 1, 128) and vit.cls_token.shape == (1, 1, 128)
    assert len(vit.blocks) == 4
    attn = vit.blocks[0].attn
    assert isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn.num_heads == 4
    assert vit.blocks[0].mlp[0].out_features == 256
    other = build("vit", in_shape=(1, 28, 28), num_classes=10, patch=7, dim=64, depth=2, heads=8, mlp_ratio=4)
    assert other.pos_embed.shape == (1, 17, 64) and other.blocks[1].mlp[0].out_features == 256
    assert other(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# ---- the norm modules ----------------------------------------------------------------------

def test_norm_modules_compute_what_they_say():
    torch.manual_seed(0)
    maps = torch.randn(4, 6, 5, 5) * 3 + 1
    rms = ChannelRMSNorm(6)
    with torch.no_grad():
        rms.weight.copy_(torch.rand(6) + 0.5)
    ref = nn.RMSNorm(6, eps=rms.eps)
    ref.weight = rms.weight
    torch.testing.assert_close(rms(maps), ref(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    # layer norm of a map normalises each sample over C, H and W together
    y = make_norm("layer", 6, conv=True)(maps)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    # batch norm of vectors: BatchNorm1d on (N, C), the rows of every token on (N, L, C)
    tokens = torch.randn(4, 9, 6) * 2 + 3
    bn, ref_bn = make_norm("batch", 6, conv=False), nn.BatchNorm1d(6)
    torch.testing.assert_close(bn(tokens), ref_bn(tokens.reshape(-1, 6)).reshape(4, 9, 6))
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(make_norm("batch", 6, conv=False)(tokens[:, 0]), nn.BatchNorm1d(6)(tokens[:, 0]))
    assert isinstance(make_norm("none", 6, conv=True), nn.Identity)
    assert isinstance(make_norm("rms", 6, conv=False), nn.RMSNorm)


# ---- bad input -----------------------------------------------------------------------------

def one_line_error(fn, *fragments):
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_unknown_name_option_and_norm():
    one_line_error(lambda: build("resnet99", in_shape=(3, 32, 32), num_classes=10), "resnet99", *NAMES)
    one_line_error(lambda: build("mlp", in_shape=(784,), num_classes=10, depht=3),
                   "depht", "depth", "width", "activation")
    one_line_error(lambda: build("vit", in_shape=(3, 32, 32), num_classes=10, shortcut="A"),
                   "shortcut", "patch", "dim", "depth", "heads", "mlp_ratio")
    one_line_error(lambda: build("resnet20", in_shape=(3, 32, 32), num_classes=10, blocks_per_stage=4),
                   "blocks_per_stage", "shortcut")
    one_line_error(lambda: build("lenet", in_shape=(1, 28, 28), num_classes=10, norm="group"), "group", *NORMS)
    one_line_error(lambda: make_norm("instance", 4, conv=True), "instance", *NORMS)
    assert models.options("resnet18") == {"shortcut": "B", "stem": "auto"}


@pytest.mark.parametrize("name, in_shape, kwargs, fragment", [
    ("mlp", (784,), {"depth": 0}, "depth"),
    ("mlp", (784,), {"depth": 1.5}, "depth"),
    ("mlp", (784,), {"depth": True}, "depth"),
    ("mlp", (784,), {"width": -1}, "width"),
    ("mlp", (784,), {"activation": "sigmoid"}, "activation"),
    ("mlp", (), {}, "in_shape"),
    ("mlp", (784,), {"num_classes": 0}, "num_classes"),
    ("lenet", (784,), {}, "in_shape"),
    ("lenet", (1, 8, 8), {}, "too small"),
    ("lenet", (1, 28, 28), {"activation": "swish"}, "activation"),
    ("plaincnn", (784,), {}, "in_shape"),
    ("plaincnn", (1, 28, 28), {"depth": 0}, "depth"),
    ("plaincnn", (1, 1, 1), {"depth": 3}, "too small"),
    ("plaincnn", (1, 28, 28), {"head": "avg"}, "head='avg' is not valid; choose one of gap, flatten"),
    ("arch1", (3, 24, 24), {"lrn": "yes"}, "lrn"),
    ("resnet20", (3, 32), {}, "in_shape"),
    ("resnet20", (3, 32, 32), {"shortcut": "C"}, "shortcut"),
    ("resnet18", (3, 32, 32), {"stem": "big"}, "stem"),
    ("vit", (3, 32, 32), {"patch": 5}, "patch"),
    ("vit", (3, 32, 32), {"dim": 130}, "heads"),
    ("vit", (3, 32, 32), {"heads": 0}, "heads"),
    ("vit", (3, 32, 32), {"mlp_ratio": 0}, "mlp_ratio"),
    ("vit", (3, 32, 32), {"mlp_ratio": float("nan")}, "mlp_ratio"),
])
def test_bad_values(name, in_shape, kwargs, fragment):
    kwargs = {"num_classes": 10, **kwargs}
    one_line_error(lambda: build(name, in_shape=in_shape, **kwargs), fragment)


# ---- feedback alignment --------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_convert_to_fa_reaches_every_layer_and_trains(name):
    torch.manual_seed(0)
    model = build(name, in_shape=SHAPES[name], num_classes=CLASSES, norm="batch")
    eligible = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.MultiheadAttention))}
    bp = copy.deepcopy(model)
    alignlab.convert(model, rule="fa")
    assert {n for n, _, _ in alignlab.converted_layers(model)} == eligible
    if name == "vit":
        assert all(isinstance(b.attn, alignlab.nn.FeedbackMultiheadAttention) for b in model.blocks)

    x, y = torch.randn(4, *SHAPES[name]), torch.randint(0, CLASSES, (4,))
    grads = []
    for net in (bp, model):
        nn.functional.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    bp_grads, fa_grads = grads
    assert all(g is not None and torch.isfinite(g).all() for g in fa_grads.values())
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    first, head = layers[0] + ".weight", layers[-1] + ".weight"
    torch.testing.assert_close(fa_grads[head], bp_grads[head])  # the output layer's update is local
    assert not torch.allclose(fa_grads[first], bp_grads[first])  # the first layer's error came through B
