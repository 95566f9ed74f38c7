"""params.yaml validation: each bad value stops with a message naming key path and value."""

import copy
import subprocess
import sys

import pytest
import yaml

from distillstudy.errors import ParamsError
from distillstudy.grid import cell_name, format_number
from distillstudy.params import check_params, load_params
from conftest import ROOT, tiny_params


def test_default_and_tiny_params_are_valid():
    load_params(ROOT / "params.yaml")
    check_params(tiny_params())


@pytest.mark.parametrize("value, expected", [(1, "1"), (1.0, "1"), ("2.50", "2.5"), (16, "16"), (0.125, "0.125")])
def test_one_spelling_per_temperature(value, expected):
    assert format_number(value) == expected
    assert cell_name("kd", {"temperature": value}, 0.9) == f"kd_T{expected}_mix0.9"


def set_key(params, path, value):
    node = params
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return params


DELETE = object()
KD_T = ["distill", "objectives", "kd", "temperature"]
BAD = [
    # (what, key path, value, words the message must contain)
    ("typo at top level", ["distil"], {}, ["distil", "unknown key"]),
    ("typo in a stage", ["distill", "temperature"], [1], ["distill.temperature", "unknown key"]),
    ("negative temperature", KD_T, [1, -2], ["distill.objectives.kd.temperature[1]", "-2"]),
    ("zero temperature", KD_T, [0], ["distill.objectives.kd.temperature[0]", "0"]),
    ("non-numeric temperature", KD_T, ["hot"], ["distill.objectives.kd.temperature[0]", "hot"]),
    ("empty grid", KD_T, [], ["distill.objectives.kd.temperature", "[]"]),
    ("duplicate temperatures", KD_T, [1, 1.0], ["distill.objectives.kd.temperature[1]", "1.0", "duplicates"]),
    ("shorthand beside objectives", ["distill", "temperatures"], [1, 4], ["distill.temperatures", "not both"]),
    ("unknown objective", ["distill", "objectives", "crd"], {}, ["distill.objectives.crd", "unknown key"]),
    ("unknown hyper-parameter", ["distill", "objectives", "dkd", "tau"], [1], ["distill.objectives.dkd.tau", "unknown key"]),
    ("missing hyper-parameter", ["distill", "objectives", "dist", "gamma"], DELETE, ["distill.objectives.dist", "gamma"]),
    ("negative DKD beta", ["distill", "objectives", "dkd", "beta"], [-1], ["distill.objectives.dkd.beta[0]", "-1"]),
    ("no objective at all", ["distill", "objectives"], {}, ["distill.objectives", "{}"]),
    ("neither objectives nor shorthand", ["distill", "objectives"], DELETE, ["distill", "distill.objectives"]),
    ("duplicate alphas", ["distill", "alpha"], [0.5, 0.50], ["distill.alpha[1]", "duplicates"]),
    ("alpha zero in the sweep", ["distill", "alpha"], [0, 0.5], ["distill.alpha", "0"]),
    ("designs without kd", ["distill", "objectives", "kd"], DELETE, ["designs.datasets", "no kd"]),
    ("design alpha not swept", ["designs", "alpha"], [0.7], ["designs.alpha[0]", "0.7", "distill.alpha"]),
    ("alpha above one", ["distill", "alpha"], 1.5, ["distill.alpha", "1.5"]),
    ("alpha below zero", ["distill", "alpha"], -0.1, ["distill.alpha", "-0.1"]),
    ("unknown dataset kind", ["prepare", "datasets"], [{"name": "x", "kind": "cifar"}], ["prepare.datasets[0].kind", "cifar"]),
    ("seeds not an integer", ["distill", "seeds"], 2.5, ["distill.seeds", "2.5"]),
    ("negative seeds", ["distill", "seeds"], -1, ["distill.seeds", "-1"]),
    ("global seed negative", ["seed"], -3, ["seed", "-3"]),
    ("student size zero", ["distill", "students", 0, "sizes"], [16, 0], ["distill.students[0].sizes[1]", "0"]),
    ("missing CSV file", ["prepare", "datasets"], [{"name": "t", "kind": "csv", "path": "data/raw/nope.csv", "label": "y"}],
     ["prepare.datasets[0].path", "nope.csv", "does not exist"]),
    ("missing section", ["teacher"], DELETE, ["teacher", "required"]),
    ("bad dataset name", ["prepare", "datasets"], [{"name": "a/b", "kind": "sine"}], ["prepare.datasets[0].name", "a/b"]),
    # study designs
    ("design on an unknown dataset", ["designs", "datasets"], ["digits", "mnist"],
     ["designs.datasets[1]", "'mnist'", "not a dataset of prepare.datasets"]),
    ("design size off the grid", ["designs", "sizes"], [8, 32], ["designs.sizes[1]", "32", "not one of the sizes of the reference family 'mlp'"]),
    ("designs without sizes", ["designs", "sizes"], [], ["designs.sizes", "at least one student size"]),
    ("unknown transfer protocol", ["designs", "transfer"], ["augmented", "mixup"], ["designs.transfer[1]", "mixup"]),
    ("label fraction above one", ["designs", "label_fraction"], [0.1, 1.5], ["designs.label_fraction[1]", "1.5"]),
    ("label fraction zero", ["designs", "label_fraction"], [0], ["designs.label_fraction[0]", "0"]),
    ("ensemble of zero teachers", ["designs", "ensemble"], [0], ["designs.ensemble[0]", "0"]),
    ("duplicate teacher widths", ["designs", "teacher_width"], [0.5, 0.50], ["designs.teacher_width[1]", "duplicates"]),
    ("one fold", ["transfer", "folds"], 1, ["transfer.folds", "1"]),
    ("negative noise", ["transfer", "noise"], -0.1, ["transfer.noise", "-0.1"]),
    ("typo in designs", ["designs", "label_fractions"], [0.1], ["designs.label_fractions", "unknown key"]),
]


@pytest.mark.parametrize("what, path, value, words", BAD, ids=[b[0] for b in BAD])
def test_bad_params_name_key_and_value(what, path, value, words):
    params = set_key(copy.deepcopy(tiny_params()), path, value)
    with pytest.raises(ParamsError) as info:
        check_params(params)
    for word in words:
        assert word in str(info.value), f"{what}: {word!r} missing from:\n{info.value}"


def test_label_column_absent_from_csv(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,cls\n1,2,x\n")
    params = set_key(copy.deepcopy(tiny_params()), ["prepare", "datasets"],
                     [{"name": "t", "kind": "csv", "path": "t.csv", "label": "label"}])
    with pytest.raises(ParamsError, match=r"prepare.datasets\[0\].label: 'label' is not a column"):
        check_params(params, base=tmp_path)


def test_cli_validate_exits_nonzero_with_the_message(tmp_path):
    params = set_key(copy.deepcopy(tiny_params()), ["distill", "alpha"], 2)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "distillstudy", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "distill.alpha: 2" in proc.stderr


def test_shorthand_names_the_same_cells_as_objectives():
    from distillstudy.grid import study_cells
    short = {"distill": {"temperatures": [1, 4.0], "logit_mse": True, "alpha": 0.9}}
    full = {"distill": {"objectives": {"kd": {"temperature": [1, 4]}, "logit_mse": {}}, "alpha": [0.9]}}
    assert study_cells(short) == study_cells(full) == ["baseline", "kd_T1_mix0.9", "kd_T4_mix0.9", "logit_mse_mix0.9"]
