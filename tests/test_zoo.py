"""The CIFAR KD model zoo (distillstudy.engine.zoo, the `cifar` family): the names of the
contract, each model's parameter count equal to the reference implementation's, logits
of the right shape on CIFAR-sized and small images in train and eval mode, the classifier
the only part n_classes changes, unknown names refused, and the init a function of the seed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillstudy.engine import zoo

# Trainable parameters for 100 classes, measured by instantiating HobbitLong/RepDistiller's
# `models/` (master; model_dict names: vgg8 = vgg8_bn ..., mobilenetv2 = MobileNetV2 =
# mobile_half, shufflev1 = ShuffleV1, shufflev2 = ShuffleV2) with num_classes=100 and
# summing p.numel() over model.parameters() (torch 2.13). mdistiller's cifar models match.
REFERENCE_PARAMS = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436, "vgg19": 20_086_692,
    "mobilenetv2": 812_836, "shufflev1": 949_258, "shufflev2": 1_355_528,
}
CONTRACT_NAMES = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                  "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
                  "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "shufflev1", "shufflev2")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def seeded(name: str, seed: int = 0, n_classes: int = 100, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.build(name, n_classes, in_channels)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Every zoo model for 100 classes, built once from seed 0 (the big ones take a while)."""
    torch.set_num_threads(1)
    return {name: seeded(name) for name in zoo.NAMES}


def test_the_zoo_has_the_contracts_names_in_order():
    assert zoo.NAMES == CONTRACT_NAMES
    assert set(REFERENCE_PARAMS) == set(CONTRACT_NAMES)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_parameter_count_equals_the_reference(models, name):
    assert count(models[name]) == REFERENCE_PARAMS[name]
    assert zoo.n_params(name) == REFERENCE_PARAMS[name]


def test_n_params_leaves_torchs_generator_alone():
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert zoo.n_params("resnet8x4", n_classes=10) == REFERENCE_PARAMS["resnet8x4"] - 90 * (256 + 1)
    assert torch.equal(torch.get_rng_state(), state)


def test_cifar_batches_give_finite_logits_in_train_and_eval_mode(models):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, model in models.items():
            for train in (True, False):
                logits = model.train(train)(x)
                assert logits.shape == (2, 100), (name, train)
                assert torch.isfinite(logits).all(), (name, train)
            # A train-mode forward updates BatchNorm's running statistics, so eval mode
            # afterwards differs from eval mode on the fresh model: BN is live, not frozen.
            assert any(key.endswith("running_mean") and value.abs().sum() > 0
                       for key, value in model.state_dict().items()), name


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_small_images_and_one_channel(name):
    """Any H, W >= 8: the models pool adaptively where the reference pools a fixed window."""
    model = seeded(name, n_classes=7, in_channels=1).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 8, 12))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_n_classes_changes_only_the_classifier(models, name):
    hundred, ten = models[name], seeded(name, n_classes=10)
    ((prefix, classifier),) = [(key, m) for key, m in ten.named_modules() if isinstance(m, nn.Linear)]
    assert classifier.out_features == 10
    shapes_100 = {key: value.shape for key, value in hundred.state_dict().items()}
    shapes_10 = {key: value.shape for key, value in ten.state_dict().items()}
    assert shapes_100.keys() == shapes_10.keys()
    changed = {key for key in shapes_100 if shapes_100[key] != shapes_10[key]}
    assert changed == {f"{prefix}.weight", f"{prefix}.bias"}
    assert count(hundred) - count(ten) == 90 * (classifier.in_features + 1)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_the_same_seed_gives_the_same_weights(models, name):
    again = seeded(name, seed=0).state_dict()
    assert all(torch.equal(value, again[key]) for key, value in models[name].state_dict().items()
               if "running" not in key and "num_batches" not in key)  # the forward test moved BN's statistics


def test_another_seed_gives_other_weights():
    first, second = seeded("resnet8", seed=0), seeded("resnet8", seed=1)
    assert not torch.equal(first.conv1.weight, second.conv1.weight)


@pytest.mark.parametrize("bad", [dict(name="resnet18"), dict(name="ResNet8x4"), dict(n_classes=0),
                                 dict(n_classes=2.0), dict(in_channels=0), dict(n_classes=True)])
def test_bad_arguments_are_refused_by_name(bad):
    arguments = dict(name="resnet8", n_classes=10, in_channels=3) | bad
    with pytest.raises(ValueError) as refused:
        zoo.build(**arguments)
    message = str(refused.value)
    if "name" in bad:
        assert repr(bad["name"]) in message and "resnet8x4" in message and "shufflev2" in message
    else:
        assert next(iter(bad)) in message
