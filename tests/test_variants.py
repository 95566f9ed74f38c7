"""Study-design variants: names, levels, which cells each trains, where its files go."""

import copy

import pytest
from distillstudy import grid as v
from conftest import tiny_params


def test_names_round_trip():
    for axis, level, name in [("transfer", "augmented", "transfer-augmented"), ("epochs", 100, "epochs-100"),
                              ("teacher_width", 0.50, "width-0.5"), ("ensemble", 5, "ensemble-5"),
                              ("label_fraction", 0.03, "labels-0.03")]:
        assert v.variant_name(axis, level) == name
        parsed = v.parse_variant(name)
        assert parsed["axis"] == axis and parsed["level"] == v.format_number(level)
    assert v.parse_variant("reference")["axis"] is None


@pytest.mark.parametrize("bad", ["labels", "width-", "mixup-3", "transfer-mixup"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError, match=bad.split("-")[0]):
        v.parse_variant(bad)


def test_levels_put_the_reference_first_once():
    params = copy.deepcopy(tiny_params())
    params["designs"]["epochs"] = [params["distill"]["epochs"], 7]
    params["designs"]["teacher_width"] = [1, 0.5]
    assert v.axis_levels("epochs", params) == [v.format_number(params["distill"]["epochs"]), "7"]
    assert v.axis_levels("teacher_width", params) == ["1", "0.5"]
    assert v.axis_levels("transfer", params)[0] == "early_stopped"


def test_dataset_variants_follow_scope_and_kind():
    params = copy.deepcopy(tiny_params())
    digits = {"name": "digits", "kind": "digits"}
    sine = {"name": "sine", "kind": "sine"}
    assert v.dataset_variants(params, digits) == [
        "transfer-in_sample", "transfer-cross_fitted", "transfer-augmented", "transfer-consistent",
        "transfer-patient", "epochs-5", "width-0.5", "ensemble-2", "labels-0.3", "resample-1", "resample-2",
        "generation-1", "generation-2"]
    assert v.dataset_variants(params, sine) == []  # not in designs.datasets
    params["designs"]["datasets"] = ["sine"]
    # a convex, seed-free teacher has no width and no ensemble
    assert not any(n.startswith(("width-", "ensemble-")) for n in v.dataset_variants(params, sine))


def test_cells_per_variant():
    temps = ["T1", "T4"]
    assert v.variant_cells("transfer-augmented", temps) == ["control", "T1", "T4"]
    assert v.variant_cells("transfer-cross_fitted", temps) == temps  # shares the reference baseline
    assert v.variant_cells("labels-0.1", temps) == ["baseline", "T1", "T4"]
    assert v.variant_cells("epochs-100", temps) == ["baseline", "T1", "T4"]
    assert v.variant_dir("reference") == "" and v.variant_dir("width-2") == "width-2/"


def test_budgets_per_variant():
    assert v.variant_epochs("reference", 40) == 40
    assert v.variant_epochs("epochs-100", 40) == 100
    assert v.variant_epochs("labels-0.1", 40) == 400  # about the reference's optimisation steps
    assert v.variant_epochs("labels-0.03", 40) == 1333
    assert v.variant_epochs("transfer-augmented", 40) == 40
