"""The report's first-screen sentences (render.summary): per dataset, whether distillation
helped, never claiming more than each CI: helps only where the CI lies above zero, hurts
only below, and otherwise "not distinguishable"; several students grouped in one sentence."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from distillstudy.analysis import objective_stats, stats, tuning_stats
from distillstudy.render import objectives as render_objectives
from distillstudy.render.summary import (HELPS, HURTS, NO_CI, UNCLEAR, StudentGain, dataset_sentence,
                                         setting_text, student_gains, students_phrase, verdict)
from synthetic import SIZES, synthetic_results, two_family_results


def gain(size, mean, lo, hi, objective="kd", setting="T8", family="mlp", **kw) -> StudentGain:
    return StudentGain(family, size, objective, setting, mean, lo, hi, **kw)


def test_ci_above_zero_helps_with_its_numbers_objective_and_setting():
    s = dataset_sentence("mnist1d", [gain(256, 0.023, 0.002, 0.043, tuned=True)])
    assert s == ("mnist1d, against the tuned baseline: distillation helps the H = 256 MLP by +2.3 pp [+0.2, +4.3] "
                 "(kd, T = 8).")


def test_ci_below_zero_hurts_and_never_says_helps():
    s = dataset_sentence("digits", [gain(16, -0.015, -0.025, -0.005, objective="nkd", setting="gamma1.5_T1")])
    assert s == ("digits, against the hard-label baseline: distillation hurts the H = 16 MLP by −1.5 pp "
                 "[−2.5, −0.5] (nkd, γ = 1.5, T = 1).")
    assert "helps" not in s


def test_ci_straddling_zero_is_not_distinguishable_and_quotes_no_gain():
    s = dataset_sentence("sine", [gain(16, 0.004, -0.006, 0.014)])
    assert s == ("sine, against the hard-label baseline: for the H = 16 MLP no objective's gain is distinguishable "
                 "from zero.")
    assert "helps" not in s and "hurts" not in s and "pp" not in s


def test_straddling_when_another_objective_excludes_zero_speaks_of_the_chosen_one_only():
    """Some other objective's CI excludes zero at that size: 'no objective's gain' would be
    false, and quoting that objective would choose on test; the sentence names the one
    validation chose, with its interval."""
    s = dataset_sentence("d", [gain(64, 0.012, -0.006, 0.031, objective="dkd", setting="alpha1_beta8_T4",
                                    others_apart=True)])
    assert "no objective" not in s and "helps" not in s
    assert ("for the H = 64 MLP the gain of the objective chosen on validation (dkd, α = 1, β = 8, T = 4: "
            "+1.2 pp [−0.6, +3.1]) is not distinguishable from zero.") in s


def test_several_students_in_one_sentence_grouped_by_verdict():
    gains = [gain(16, 0.004, -0.006, 0.014, tuned=True),
             gain(64, 0.001, -0.009, 0.011, objective="dkd", setting="alpha1_beta8_T4", tuned=True),
             gain(256, 0.023, 0.002, 0.043, tuned=True),
             gain(512, 0.031, 0.011, 0.051, objective="logit_mse", setting="", tuned=True)]
    s = dataset_sentence("mnist1d", gains)
    assert s == ("mnist1d, against the tuned baseline: distillation helps the H = 256 MLP by +2.3 pp [+0.2, +4.3] "
                 "(kd, T = 8) and the H = 512 MLP by +3.1 pp [+1.1, +5.1] (logit_mse); for the H = 16 and 64 MLPs "
                 "no objective's gain is distinguishable from zero.")
    assert not re.search(r"\.\s", s)  # one sentence: its full stop is the last character


def test_helps_hurts_and_unclear_together_and_two_families_grouped():
    gains = [gain(16, 0.02, 0.01, 0.03), gain(64, -0.02, -0.03, -0.01, objective="nkd", setting="gamma1.5_T1"),
             gain(8, 0.0, -0.01, 0.01, family="cnn"), gain(32, 0.001, -0.01, 0.012, family="cnn"),
             gain(128, 0.0, -0.01, 0.01)]
    s = dataset_sentence("toy", gains)
    helps, hurts, unclear = s.split(": ", 1)[1].split("; ")
    assert helps == "distillation helps the H = 16 MLP by +2.0 pp [+1.0, +3.0] (kd, T = 8)"
    assert hurts == "it hurts the H = 64 MLP by −2.0 pp [−3.0, −1.0] (nkd, γ = 1.5, T = 1)"
    assert unclear == ("for the 8- and 32-channel CNNs and the H = 128 MLP no objective's gain is distinguishable "
                       "from zero.")


def test_one_seed_claims_nothing():
    s = dataset_sentence("d", [gain(16, 0.05, math.nan, math.nan)])
    assert verdict(gain(16, 0.05, math.nan, math.nan)) == NO_CI
    assert "helps" not in s and "one seed gives no confidence interval" in s


def test_baseline_named_as_it_was_trained():
    assert ", against the tuned baseline:" in dataset_sentence("d", [gain(16, 0.0, -1, 1, tuned=True)])
    assert ", against the hard-label baseline:" in dataset_sentence("d", [gain(16, 0.0, -1, 1)])
    mixed = dataset_sentence("d", [gain(16, 0.0, -1, 1, tuned=True), gain(8, 0.0, -1, 1, family="cnn")])
    assert ", against the hard-label baseline (tuned for the H = 16 MLP):" in mixed
    assert dataset_sentence("d", []).startswith("d: no distilled students")


@pytest.mark.parametrize("lo, hi", [(a, b) for a in (-0.02, -1e-4, 0.0, 1e-4, 0.02) for b in (-0.01, 0.0, 1e-4, 0.03)
                                    if a <= b])
def test_the_sentence_never_claims_more_than_the_ci(lo, hi):
    """Helps exactly when lo > 0, hurts exactly when hi < 0 (a bound of exactly 0 is no claim)."""
    s = dataset_sentence("d", [gain(16, (lo + hi) / 2, lo, hi)])
    assert ("helps" in s) == (lo > 0) and ("hurts" in s) == (hi < 0)
    assert ("distinguishable from zero" in s) == (lo <= 0 <= hi)
    assert verdict(gain(16, 0, lo, hi)) == (HELPS if lo > 0 else HURTS if hi < 0 else UNCLEAR)
    if lo > 0 or hi < 0:  # a bound that one decimal would print as 0.0 gets a second decimal
        assert not re.search(r"[\[ ]0\.0[,\]]", s), s


def test_setting_and_student_spelling():
    assert setting_text("T4") == "T = 4" and setting_text("") == ""
    assert setting_text("alpha1_beta8_T4") == "α = 1, β = 8, T = 4"
    assert setting_text("beta1_gamma1.5_T0.5") == "β = 1, γ = 1.5, T = 0.5"
    assert setting_text("odd-name") == "odd-name"
    assert students_phrase("mlp", [64, 16]) == "the H = 16 and 64 MLPs"
    assert students_phrase("mlp3", [16]) == "the H = 16 MLP (3 hidden layers)"
    assert students_phrase("cnn", [8, 16, 32]) == "the 8-, 16- and 32-channel CNNs"
    assert students_phrase("cifar", ["resnet8x4"]) == "the resnet8x4 student"
    assert students_phrase("tiny_cnn", [2, 4]) == "the tiny_cnn students of sizes 2 and 4"


def test_student_gains_are_the_objectives_tables_numbers():
    """From the frames the objectives table renders: per size the validation-best objective
    (render.objectives.best_objectives) and its row's gain and CI, unchanged; the tuned
    flag from the baseline's chosen settings; `others_apart` from the other objectives' CIs."""
    df = stats.normalise_results(synthetic_results("toy"))
    sel = objective_stats.select_objectives(df)
    cmp = objective_stats.compare_objectives(df, sel)
    best = render_objectives.best_objectives(sel, cmp)
    gains = student_gains(sel, cmp, tuning_stats.chosen_settings(df))
    assert [g.size for g in gains] == list(SIZES)
    for g in gains:
        row = sel[(sel["student_size"] == g.size) & (sel["objective"] == best[g.size])].iloc[0]
        assert (g.family, g.objective, g.setting) == ("mlp", row["objective"], row["setting"])
        assert (g.mean, g.lo, g.hi) == (row["gain_mean"], row["gain_lo"], row["gain_hi"])
        others = sel[(sel["student_size"] == g.size) & (sel["objective"] != g.objective)]
        assert g.others_apart == bool(((others["gain_lo"] > 0) | (others["gain_hi"] < 0)).any())
        assert not g.tuned  # no split-"all" tuning rows in the synthetic results
    # the planted gains (synthetic.OBJECTIVE_CELLS): +2 to +3 pp at size 16, half that at 64
    assert verdict(gains[0]) == HELPS and gains[0].lo > 0.01

    # a tuned baseline: its chosen settings recorded (results.csv split "all", metrics lr, epochs, ...)
    chosen = tuning_stats.chosen_settings(df).iloc[:0]
    chosen = chosen.reindex([0]).assign(dataset="toy", family="mlp", student_size=SIZES[0], model="baseline")
    tuned = student_gains(sel, cmp, chosen)
    assert [g.tuned for g in tuned] == [True] + [False] * (len(SIZES) - 1)


def test_no_planted_effect_reads_not_distinguishable():
    """The mlp students of two_family_results have no objective effect: the sentence claims
    nothing for them, while the cnn's planted gains are claimed."""
    df = stats.normalise_results(two_family_results("toy"))
    gains = []
    for family in ("mlp", "cnn"):
        view = df[(df["family"] == family) | (df["model"] == "teacher")]
        sel = objective_stats.select_objectives(view)
        gains += student_gains(sel, objective_stats.compare_objectives(view, sel))
    s = dataset_sentence("toy", gains)
    mlp_verdicts = {verdict(g) for g in gains if g.family == "mlp"}
    assert HELPS not in mlp_verdicts and HURTS not in mlp_verdicts
    helps, *rest = s.split(": ", 1)[1].split("; ")
    assert helps.startswith("distillation helps the 16-channel CNN by +") and "and the 64-channel CNN by +" in helps
    assert "MLP" not in helps and all("MLP" in clause and "distinguishable from zero" in clause for clause in rest)
    assert not np.isnan([g.mean for g in gains]).any()
