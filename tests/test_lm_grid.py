"""distillstudy.lm_grid: the language-model cells of distill.token_objectives, their names and
their parsing. Every generated name parses back to itself and to the setting that made it;
lists are swept as products; canonical numbers give one name; malformed names are refused;
the Snakemake wildcard pattern matches every generated name and no classification cell."""

import itertools
import re

import pytest
from distillstudy import grid
from distillstudy.lm_grid import (LM_CELL_PATTERN, lm_cell_name, lm_cells, objective_sources, parse_lm_cell,
                                  token_objectives)
from distillstudy.token_objectives import TOKEN_OBJECTIVES

#: A study touching every branch: several lists per objective, an objective with its own
#: sources, one switched off (null), two alphas, two on-policy fractions.
WIDE = {
    "alpha": [0.5, 1],
    "token_objectives": {
        "fkl": {"temperature": [1, 2]},
        "rkl": {"temperature": [0.5]},
        "jsd": {"beta": [0.1, 0.9], "temperature": [1, 4]},
        "tvd": {},
        "skl": {"lam": [0.1], "sequences": ["teacher", "student"]},
        "srkl": None,
    },
    "sequences": ["data", "teacher", "student"],
    "on_policy_fraction": [0.25, 1],
}


def test_every_cell_parses_back_to_its_own_name_and_setting():
    cells = lm_cells(WIDE)
    assert cells[0] == "baseline" and len(set(cells)) == len(cells)
    for cell in cells:
        spec = parse_lm_cell(cell)
        if cell == "baseline":
            assert spec == {"objective": "baseline", "hyper": {}, "setting": "", "source": "data", "alpha": 0.0,
                            "on_policy_fraction": 0.0}
            continue
        rebuilt = lm_cell_name(spec["objective"], spec["hyper"], spec["source"], alpha=spec["alpha"],
                               fraction=spec["on_policy_fraction"])
        assert rebuilt == cell
        assert re.fullmatch(LM_CELL_PATTERN, cell), cell
        # sampled prefixes train on the divergence alone; only the student source samples on-policy
        if spec["source"] != "data":
            assert spec["alpha"] == 1.0
        assert (spec["on_policy_fraction"] > 0) == (spec["source"] == "student")


def test_lists_sweep_the_product_in_order():
    cells = lm_cells(WIDE)
    expected = ["baseline"]
    for t in (1, 2):
        expected += [f"fkl_T{t}_data_mix0.5", f"fkl_T{t}_data_mix1", f"fkl_T{t}_teacher",
                     f"fkl_T{t}_student0.25", f"fkl_T{t}_student1"]
    expected += ["rkl_T0.5_data_mix0.5", "rkl_T0.5_data_mix1", "rkl_T0.5_teacher", "rkl_T0.5_student0.25",
                 "rkl_T0.5_student1"]
    for beta, t in itertools.product((0.1, 0.9), (1, 4)):  # TOKEN_OBJECTIVES' order: beta, then T
        head = f"jsd_beta{beta}_T{t}"
        expected += [f"{head}_data_mix0.5", f"{head}_data_mix1", f"{head}_teacher", f"{head}_student0.25",
                     f"{head}_student1"]
    expected += ["tvd_data_mix0.5", "tvd_data_mix1", "tvd_teacher", "tvd_student0.25", "tvd_student1"]
    expected += ["skl_lam0.1_teacher", "skl_lam0.1_student0.25", "skl_lam0.1_student1"]  # its own sources
    assert cells == expected
    # the count: 1 + settings x (alphas + 1 teacher + fractions), skl on two sources only
    assert len(cells) == 1 + (2 + 1 + 4 + 1) * (2 + 1 + 2) + 1 * (1 + 2)


def test_parsed_hyper_parameters_are_the_swept_values():
    by_name = {cell: parse_lm_cell(cell) for cell in lm_cells(WIDE)}
    jsd = {(s["hyper"]["beta"], s["hyper"]["temperature"]) for s in by_name.values() if s["objective"] == "jsd"}
    assert jsd == {(0.1, 1.0), (0.1, 4.0), (0.9, 1.0), (0.9, 4.0)}
    assert by_name["jsd_beta0.9_T4_data_mix0.5"]["setting"] == "beta0.9_T4"
    assert by_name["tvd_student0.25"] == {"objective": "tvd", "hyper": {}, "setting": "", "source": "student",
                                          "alpha": 1.0, "on_policy_fraction": 0.25}
    assert by_name["skl_lam0.1_teacher"] == {"objective": "skl", "hyper": {"lam": 0.1}, "setting": "lam0.1",
                                             "source": "teacher", "alpha": 1.0, "on_policy_fraction": 0.0}
    assert by_name["fkl_T2_data_mix0.5"]["alpha"] == 0.5 and by_name["fkl_T2_data_mix1"]["alpha"] == 1.0
    assert all(s["objective"] != "srkl" for s in by_name.values())  # null turns it off


def test_an_objectives_own_sequences_override_distill_sequences():
    distill = {"alpha": [0.9], "sequences": ["data"], "on_policy_fraction": [0.5],
               "token_objectives": {"fkl": {"temperature": [1], "sequences": ["data", "student"]}, "tvd": {}}}
    assert objective_sources(distill, "fkl") == ["data", "student"]
    assert objective_sources(distill, "tvd") == ["data"]
    assert lm_cells(distill) == ["baseline", "fkl_T1_data_mix0.9", "fkl_T1_student0.5", "tvd_data_mix0.9"]


def test_defaults_data_sequences_and_full_on_policy():
    """Without distill.sequences every objective trains on data; without on_policy_fraction
    the student source samples every step (lambda = 1)."""
    distill = {"alpha": 0.9, "token_objectives": {"rkl": {"temperature": [1]}}}
    assert lm_cells(distill) == ["baseline", "rkl_T1_data_mix0.9"]
    distill["sequences"] = ["student"]
    assert lm_cells(distill) == ["baseline", "rkl_T1_student1"]
    assert lm_cells({"alpha": [0.9]}) == ["baseline"]
    assert token_objectives({"token_objectives": {"fkl": None, "tvd": {}}}) == {"tvd": {}}


@pytest.mark.parametrize("key", ["alpha", "on_policy_fraction", "temperature", "lam"])
def test_canonical_numbers_name_one_cell(key):
    """1, 1.0 (and 0.50 vs 0.5) are one value: the same name, as spelling.format_number writes it."""
    def study(value):
        distill = {"alpha": [0.5], "sequences": ["data", "teacher", "student"], "on_policy_fraction": [0.5],
                   "token_objectives": {"fkl": {"temperature": [1]}, "skl": {"lam": [0.5]}}}
        if key in ("alpha", "on_policy_fraction"):
            distill[key] = [value]
        else:
            distill["token_objectives"]["fkl" if key == "temperature" else "skl"][key] = [value]
        return lm_cells(distill)

    assert study(1) == study(1.0) == study("1.0")
    assert study(0.5) == study(0.50) == study(5e-1)
    assert study(1) != study(0.5)
    for cell in study(1.0):
        assert "1.0" not in cell and ".0_" not in cell


def test_alpha_list_and_fraction_list_each_name_a_cell():
    distill = {"alpha": [0.1, 0.5, 0.9], "sequences": ["data", "student"], "on_policy_fraction": [0.1, 0.5, 1.0],
               "token_objectives": {"tvd": {}}}
    cells = lm_cells(distill)
    assert cells == ["baseline", "tvd_data_mix0.1", "tvd_data_mix0.5", "tvd_data_mix0.9", "tvd_student0.1",
                     "tvd_student0.5", "tvd_student1"]
    assert [parse_lm_cell(c)["alpha"] for c in cells[1:4]] == [0.1, 0.5, 0.9]
    assert [parse_lm_cell(c)["on_policy_fraction"] for c in cells[4:]] == [0.1, 0.5, 1.0]


def test_small_and_exponent_numbers_round_trip():
    cell = lm_cell_name("skl", {"lam": 1e-05}, "data", alpha=0.001)
    assert cell == "skl_lam1e-05_data_mix0.001"
    assert parse_lm_cell(cell)["hyper"] == {"lam": 1e-05}
    assert re.fullmatch(LM_CELL_PATTERN, cell)


@pytest.mark.parametrize("cell", [
    "",
    "Baseline",
    "fkl",                             # no source
    "fkl_T1",                          # no source
    "fkl_T1_data",                     # data without its alpha
    "fkl_T1_mix0.5",                   # a classification-style cell
    "fkl_T1_data_mix0",                # alpha 0 is the baseline, not a cell
    "fkl_T1_data_mix1.5",              # alpha outside (0, 1]
    "fkl_T1_student1.5",               # lambda outside [0, 1]
    "fkl_T1_student",                  # student without its lambda
    "fkl_T1_teacher0.5",               # teacher takes no number
    "fkl_T1.0_data_mix0.5",            # not canonical
    "fkl_T1_data_mix0.50",             # not canonical
    "fkl_T01_data_mix0.5",             # not canonical
    "fkl_T1_T2_data_mix0.5",           # one value per hyper-parameter
    "fkl_beta0.5_data_mix0.5",         # fkl has no beta
    "tvd_T1_teacher",                  # tvd has no hyper-parameter
    "jsd_T1_beta0.5_data_mix0.5",      # TOKEN_OBJECTIVES' order: beta first
    "kl_T1_data_mix0.5",               # no such objective
    "kd_T4_mix0.9",                    # classification
    "fkl_T1_data_mix0.5_teacher",      # two sources
    "fkl_T1_data_mix0.5 ",             # trailing space
])
def test_malformed_names_are_refused(cell):
    with pytest.raises(ValueError, match="language-model cell"):
        parse_lm_cell(cell)


def test_pattern_matches_generated_names_and_no_classification_cell():
    pattern = re.compile(LM_CELL_PATTERN)
    for cell in lm_cells(WIDE):
        assert pattern.fullmatch(cell), cell
    # What Snakemake does with a wildcard constraint: embeds it in a path regex.
    path = re.compile(rf"models/students/hmm/gpt-16/(?P<cell>{LM_CELL_PATTERN})\.lm\.npz")
    for cell in lm_cells(WIDE):
        assert path.fullmatch(f"models/students/hmm/gpt-16/{cell}.lm.npz")["cell"] == cell
    classification = grid.grid_cells(grid.distill_objectives({
        "alpha": [0.5, 0.9], "objectives": {"kd": {"temperature": [1, 4]}, "logit_mse": {},
                                            "dkd": {"alpha": [1], "beta": [8], "temperature": [4]},
                                            "dist": {"beta": [1], "gamma": [1], "temperature": [4]},
                                            "ls_kd": {"temperature": [4]}, "nkd": {"gamma": [1.5], "temperature": [1]}},
    }), [0.5, 0.9])
    assert "kd_T4_mix0.9" in classification
    for cell in [*classification, "control", "kd_T4_mix0.9"]:
        assert not pattern.fullmatch(cell), cell
    # and the classification pattern takes no language-model cell but the shared baseline
    for cell in lm_cells(WIDE)[1:]:
        assert not re.fullmatch(grid.CELL_PATTERN, cell), cell


def test_every_token_objective_has_cells_on_every_source():
    distill = {"alpha": [0.9], "sequences": ["data", "teacher", "student"], "on_policy_fraction": [0.5],
               "token_objectives": {name: {} for name in TOKEN_OBJECTIVES}}
    parsed = [parse_lm_cell(c) for c in lm_cells(distill)[1:]]
    assert {(p["objective"], p["source"]) for p in parsed} == set(itertools.product(TOKEN_OBJECTIVES,
                                                                                    ("data", "teacher", "student")))
