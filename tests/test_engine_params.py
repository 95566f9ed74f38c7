"""params.yaml's standard-engine keys checked before any job (engine_params.py, the schema):
each mistake is refused naming the key; the CIFAR preset and the default study pass."""

from __future__ import annotations

import copy

import pytest
import yaml
from cifar_format import write_cifar

from conftest import ROOT
from distillstudy.errors import ParamsError
from distillstudy.params import check_params
from distillstudy.students import builtin_engine, student_name, parse_student

DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())
PRESET = yaml.safe_load((ROOT / "studies/cifar100_kd.yaml").read_text())


def merged(over: dict) -> dict:
    """params.yaml with a configfile merged over it, as Snakemake does (dicts key by key)."""
    def update(base, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                update(base[key], value)
            else:
                base[key] = value
        return base
    return update(copy.deepcopy(DEFAULT), copy.deepcopy(over))


@pytest.fixture
def preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "data/raw", "cifar100", n_train=40, n_test=20)
    return merged(PRESET)


def refused(params: dict, *fragments: str) -> str:
    with pytest.raises(ParamsError) as err:
        check_params(params)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_the_preset_and_the_default_study_pass(preset):
    check_params(preset)
    check_params(DEFAULT, base=ROOT)


def test_zoo_names_are_the_cifar_family_s_sizes(preset):
    preset["distill"]["students"][0]["sizes"] = ["resnet8x5"]
    refused(preset, "distill.students[0].sizes[0]: 'resnet8x5' is not a model of the cifar zoo")
    preset["distill"]["students"][0] = {"family": "mlp", "sizes": ["resnet8x4"], "datasets": ["c100-resnet"]}
    refused(preset, "the mlp family's sizes are numbers")


def test_a_zoo_teacher_needs_a_zoo_name_and_image_data_needs_a_teacher(preset):
    preset["prepare"]["datasets"][0]["teacher"] = {"family": "cifar", "size": "resnet33"}
    refused(preset, "prepare.datasets[0].teacher.size: 'resnet33'")
    del preset["prepare"]["datasets"][0]["teacher"]
    refused(preset, "prepare.datasets[0].teacher: image data need a teacher")


def test_the_standard_engine_needs_its_recipes(preset):
    del preset["distill"]["recipe"], preset["teacher"]["recipe"]
    refused(preset, "distill.recipe: the standard engine trains", "teacher.recipe: dataset 'c100-resnet'")


def test_recipe_mistakes_are_refused_before_any_job(preset):
    preset["distill"]["recipe"]["optimizer"] = {"name": "adamw", "lr": 0.1, "momentum": 0.9, "nesterov": True}
    preset["teacher"]["recipe"]["schedule"] = {"name": "cosine", "warmup_epochs": 240}
    refused(preset, "distill.recipe.optimizer.nesterov", "distill.recipe.optimizer.momentum: sgd only",
            "teacher.recipe.schedule.warmup_epochs: 240 leaves no epoch")
    preset["distill"]["recipe"]["optimizer"] = {"name": "lion", "lr": 0.1}
    refused(preset, "distill.recipe.optimizer.name")


def test_stacked_cannot_train_the_zoo_and_augmentation_is_for_images(preset):
    preset["distill"]["students"][0]["engine"] = "stacked"
    refused(preset, "distill.students[0].engine: stacked cannot train 'cifar'")
    flat = merged({"distill": {"students": [{"family": "mlp", "sizes": [16], "engine": "standard"}]}})
    refused(flat, "distill.recipe.augment: crop and flip are for image data")


def test_designs_and_tuning_are_refused_on_standard_engine_families(preset):
    preset["designs"]["datasets"] = ["c100-resnet"]
    preset["distill"]["tune"] = {"lr": [0.1], "weight_decay": [0], "epochs": [1], "datasets": ["c100-resnet"]}
    refused(preset, "designs.datasets: 'c100-resnet': the study designs run on the stacked engines",
            "distill.tune: would tune 'cifar' on 'c100-resnet'")


def test_the_zoo_family_may_repeat_with_other_students_but_not_the_same(preset):
    check_params(preset)  # resnet8x4 on c100-resnet, wrn_16_2 on c100-wrn: two entries, one label
    preset["distill"]["students"][1] = {"family": "cifar", "sizes": ["resnet8x4"], "datasets": ["c100-resnet"]}
    refused(preset, "distill.students[1].family: 'cifar' is named 'cifar'")


def test_engines_and_student_names():
    assert builtin_engine({"family": "cifar"}, "csv") == "standard"
    assert builtin_engine({"family": "mlp"}, "cifar100") == "standard"
    assert builtin_engine({"family": "mlp", "engine": "auto"}, "mnist1d") == "stacked"
    assert builtin_engine({"family": "zoo/x.py:f"}, "csv") is None  # your factory: its module decides
    assert builtin_engine({"family": "zoo/x.py:f", "engine": "standard"}, "csv") == "standard"
    assert student_name("cifar", "wrn_16_2") == "cifar-wrn_16_2"
    assert parse_student("cifar-wrn_16_2") == ("cifar", "wrn_16_2") and parse_student("cnn-8") == ("cnn", 8)
