"""Study designs (reports/designs.csv): the statistics against hand computation and
scipy, selection on validation, the ensemble share and its guard, the generated
sentences, and the report's "Study designs" section (present, absent, partial,
escaped, rendering in headless Chromium)."""

from __future__ import annotations

import base64
import copy
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from design_synthetic import LEVELS, NOISE, SEED_FX, SEEDS, synthetic_designs
from distillstudy.analysis import design_stats, stats
from distillstudy.render import plotting
from distillstudy.render import designs as design_sections
from distillstudy.render.text import signed, slug
from distillstudy.stages import report
from synthetic import EVIL, report_inputs

PARAMS = {"distill": {"epochs": 40}, "transfer": {"folds": 5},
          "designs": {"datasets": ["toy"], "sizes": [16, 64], "transfer": ["in_sample", "cross_fitted", "augmented"],
                      "epochs": [100], "teacher_width": [0.25, 2], "ensemble": [5], "label_fraction": [0.03]}}


@pytest.fixture(scope="module")
def designs():
    return design_stats.normalise_designs(synthetic_designs())


@pytest.fixture(scope="module")
def summary(designs):
    return design_stats.level_summary(designs, params=PARAMS)


def pick(summary, axis, level, size=16):
    r = summary[(summary["axis"] == axis) & (summary["level"] == level) & (summary["student_size"] == size)]
    assert len(r) == 1, (axis, level, size)
    return r.iloc[0]


def values(designs, axis, level, model, size=16, T="", split="test", metric="accuracy"):
    d = designs[(designs["axis"] == axis) & (designs["level"] == level) & (designs["model"] == model)
                & (designs["student_size"] == size) & (designs["temperature"] == T) & (designs["split"] == split)
                & (designs["metric"] == metric)]
    return d.sort_values("seed")["value"].to_numpy()


# --------------------------------------------------------------------------- statistics


def test_augmented_gains_over_baseline_and_control_match_scipy(designs, summary):
    r = pick(summary, "transfer", "augmented")
    base = values(designs, "transfer", "augmented", "baseline")
    ctrl = values(designs, "transfer", "augmented", "control")
    dist = values(designs, "transfer", "augmented", "distilled", T="4")
    # planted: distilled +5 pp over the baseline, control +4 pp, so +1 pp over the control
    assert r["best_temperature"] == "4"
    assert r["gain_mean"] == pytest.approx(0.05) and r["control_gain_mean"] == pytest.approx(0.04)
    assert r["over_control_mean"] == pytest.approx(0.01)
    # per-seed diffs by hand: 0.05 + distilled noise
    assert dist - base == pytest.approx([0.05 + e for e in NOISE["distilled"]])
    for prefix, a, b in (("gain", dist, base), ("control_gain", ctrl, base), ("over_control", dist, ctrl)):
        lo, hi = st.ttest_rel(a, b).confidence_interval(0.95)
        assert (r[f"{prefix}_lo"], r[f"{prefix}_hi"]) == pytest.approx((lo, hi), rel=1e-9), prefix
    assert r["gain_significant"] and r["control_gain_significant"]
    assert not r["over_control_significant"]  # [-0.00006, +0.020]: includes zero
    assert r["n"] == r["n_control"] == r["n_over_control"] == len(SEEDS)
    # baseline mean with an (unpaired) t interval, teacher numbers as planted
    lo, hi = st.t.interval(0.95, len(base) - 1, loc=base.mean(), scale=st.sem(base))
    assert (r["baseline_mean"], r["baseline_lo"], r["baseline_hi"]) == pytest.approx((base.mean(), lo, hi))
    assert r["baseline_mean"] == pytest.approx(0.716 + np.mean(list(SEED_FX.values())))
    assert (r["teacher_test_accuracy"], r["teacher_transfer_accuracy"], r["teacher_transfer_mmp"]) == \
        pytest.approx((0.95, 0.96, 0.93))
    assert r["best_test_mean"] == pytest.approx(dist.mean())
    # control columns only where a control exists
    assert math.isnan(pick(summary, "transfer", "cross_fitted")["over_control_mean"])


def test_best_temperature_is_chosen_on_validation_not_test(designs, summary):
    # teacher width 2: validation prefers T = 1 (+5 vs +1 pp) while test would prefer T = 4 (+6 vs +2 pp)
    r = pick(summary, "teacher_width", "2")
    assert r["best_temperature"] == "1"
    assert r["gain_mean"] == pytest.approx(LEVELS["teacher_width"]["2"]["test"]["1"])
    # the same rule as the main grid's: stats.best_temperature on the level's rows
    frame = design_stats.level_frame(designs, "toy", "teacher_width", "2")
    bt = stats.best_temperature(frame).set_index("student_size")
    for size in (16, 64):
        s = pick(summary, "teacher_width", "2", size)
        assert s["best_temperature"] == bt.loc[size, "temperature"]
        assert s["gain_mean"] == pytest.approx(bt.loc[size, "gain_mean"])
        assert s["gain_lo"] == pytest.approx(bt.loc[size, "gain_lo"])


def test_levels_sorted_and_reference_marked(summary):
    levels = lambda axis: list(dict.fromkeys(summary.loc[summary["axis"] == axis, "level"]))  # noqa: E731
    assert levels("transfer") == ["early_stopped", "in_sample", "cross_fitted", "augmented"]
    assert levels("teacher_width") == ["0.25", "1", "2"]
    assert levels("label_fraction") == ["0.03", "1"]
    refs = summary[summary["is_reference"]].drop_duplicates(["axis", "level"])
    assert dict(zip(refs["axis"], refs["level"])) == {"transfer": "early_stopped", "epochs": "40",
                                                      "teacher_width": "1", "ensemble": "1", "label_fraction": "1"}
    # epochs has no reference without params
    no_params = design_stats.level_summary(design_stats.normalise_designs(synthetic_designs(axes=["epochs"])))
    assert not no_params["is_reference"].any()


def test_normalise_designs_levels_axes_and_columns():
    d = synthetic_designs(axes=["teacher_width"])
    d["level"] = d["level"].replace({"1": "1.0", "0.25": "0.250"})
    n = design_stats.normalise_designs(d)
    assert set(n["level"]) == {"0.25", "1", "2"}
    assert list(n.columns) == design_stats.COLUMNS
    bad = d.copy()
    bad.loc[0, "axis"] = "temperature"
    with pytest.raises(ValueError, match="unknown axis 'temperature'"):
        design_stats.normalise_designs(bad)
    with pytest.raises(ValueError, match="lacks columns"):
        design_stats.normalise_designs(d.drop(columns="level"))
    assert design_stats.load_designs(None) is None
    assert design_stats.load_designs("/nonexistent/designs.csv") is None


def test_ensemble_share_arithmetic(designs):
    share = design_stats.ensemble_share(designs)
    assert list(share["student_size"]) == [16, 64]
    r = share.iloc[0]
    ens = values(designs, "ensemble", "5", "distilled", T="4")
    single = values(designs, "ensemble", "1", "distilled", T="4")
    assert (r["ensemble_test_accuracy"], r["single_test_accuracy"]) == pytest.approx((0.97, 0.95))
    assert r["teacher_gain"] == pytest.approx(0.02)
    assert (r["student_ensemble"], r["student_single"]) == pytest.approx((ens.mean(), single.mean()))
    # (student from ensemble - student from single) / (ensemble - single) = 0.01 / 0.02
    assert r["share"] == pytest.approx((ens.mean() - single.mean()) / (0.97 - 0.95)) == pytest.approx(0.5)
    assert r["denominator_ok"] and r["note"] == ""
    assert r["share_lo"] == pytest.approx(r["student_gain_lo"] / r["teacher_gain"])


def test_ensemble_share_with_distinct_temperatures_and_noise():
    """The single teacher's best T is 1 on validation, the ensemble's 4: each level's
    own choice, paired by seed; the CI comes from the paired differences."""
    levels = copy.deepcopy(LEVELS)
    levels["ensemble"]["1"]["val"] = {"1": 0.03, "4": 0.02}
    d = design_stats.normalise_designs(synthetic_designs(axes=["ensemble"], levels=levels))
    # give the ensemble's students their own noise so the paired difference has spread
    m = (d["level"] == "5") & (d["model"] == "distilled") & (d["metric"] == "accuracy") & (d["split"] == "test")
    d.loc[m, "value"] += d.loc[m, "seed"].map({0: 0.002, 1: -0.004, 2: 0.0, 3: 0.006})
    r = design_stats.ensemble_share(d).iloc[0]
    assert (r["single_temperature"], r["ensemble_temperature"]) == ("1", "4")
    a = values(d, "ensemble", "5", "distilled", T="4")
    b = values(d, "ensemble", "1", "distilled", T="1")
    lo, hi = st.ttest_rel(a, b).confidence_interval(0.95)
    assert (r["student_gain_mean"], r["student_gain_lo"], r["student_gain_hi"]) == pytest.approx(
        ((a - b).mean(), lo, hi))
    assert (r["share"], r["share_lo"], r["share_hi"]) == pytest.approx(
        ((a - b).mean() / 0.02, lo / 0.02, hi / 0.02))


@pytest.mark.parametrize("ensemble_acc", [0.95, 0.93])
def test_ensemble_share_guard_when_the_ensemble_does_not_beat_the_single_teacher(ensemble_acc):
    levels = copy.deepcopy(LEVELS)
    levels["ensemble"]["5"]["teacher"] = ensemble_acc
    d = design_stats.normalise_designs(synthetic_designs(axes=["ensemble"], levels=levels))
    share = design_stats.ensemble_share(d)
    assert not share["denominator_ok"].any()
    assert share["share"].isna().all() and share["share_lo"].isna().all()
    assert share["note"].str.contains("did not beat the single teacher").all()
    assert share["student_gain_mean"].notna().all()  # the students are still compared
    text = " ".join(design_sections.share_sentences("toy", share))
    assert "the ensemble did not beat the single teacher" in text and "undefined" in text
    _, rows = design_sections.share_table("toy", share)
    assert "did not beat the single teacher" in rows[0][-1]["text"]


# --------------------------------------------------------------------------- sentences


def test_transfer_sentences_carry_the_numbers(summary):
    rows = summary[summary["axis"] == "transfer"]
    text = " ".join(design_sections.transfer_sentences("toy", rows, 95, PARAMS))
    r = pick(summary, "transfer", "augmented")
    assert ("On toy, with the augmented transfer set the hidden width 16 student gains +5.0 pp [+3.5, +6.5] over "
            "the baseline, but only +1.0 pp [") in text
    assert f"[{signed(r['over_control_lo'], 100, 1)}, +2.0] over the hard-label control" in text
    assert "the control itself gains +4.0 pp [+3.5, +4.5]" in text
    assert "most of the gain is augmentation" in text
    assert "+1.5 pp [0.0, +3.0] with the early-stopped teacher (reference) at T = 4" in text
    assert "mean of the 5 fold teachers' probabilities" in text
    assert "in_sample 0.997" in text  # teacher confidence on the transfer points
    assert "No gain on this axis" not in text


def test_transfer_verdicts_follow_the_intervals():
    """The teacher adds beyond augmentation when the gain over the control excludes zero;
    with nothing planted, the sentence says no CI excludes zero."""
    levels = copy.deepcopy(LEVELS)
    levels["transfer"]["augmented"]["control"] = 0.01  # distilled +5, control +1: +4 over the control
    s = design_stats.level_summary(design_stats.normalise_designs(synthetic_designs(axes=["transfer"], levels=levels)))
    text = " ".join(design_sections.transfer_sentences("toy", s, 95, None))
    assert "and +4.0 pp [" in text and "the teacher adds a gain beyond augmentation" in text
    null = copy.deepcopy(LEVELS)
    for spec in null["transfer"].values():
        spec["test"] = spec["val"] = {"1": 0.0, "4": 0.0}
    null["transfer"]["augmented"]["control"] = 0.0
    s = design_stats.level_summary(design_stats.normalise_designs(synthetic_designs(axes=["transfer"], levels=null)))
    assert not s[["gain_significant", "over_control_significant", "control_gain_significant"]].to_numpy().any()
    text = " ".join(design_sections.transfer_sentences("toy", s, 95, None))
    assert "No gain on this axis has a 95% CI that excludes zero" in text
    assert "mean of the K fold teachers' probabilities" in text  # K unknown without params


def test_capacity_and_curve_sentences(summary):
    width = " ".join(design_sections.capacity_sentences("toy", "teacher_width",
                                                        summary[summary["axis"] == "teacher_width"], 95))
    assert "90.0% at 0.25× width, 95.0% at 1× width (reference), 97.0% at 2× width" in width
    assert ("Hidden width 16: gain over the baseline +1.0 pp [−0.5, +2.5] at 0.25× width, +3.0 pp [+1.5, +4.5] at "
            "1× width") in width
    assert "non-monotone" in width and "Mirzadeh" in width
    labels = " ".join(design_sections.curve_sentences("toy", "label_fraction",
                                                      summary[summary["axis"] == "label_fraction"], 95))
    assert "with 3% of the labels the baseline reaches 42.2%" in labels
    assert "gains +10.0 pp [+8.5, +11.5]" in labels and "as Hinton et al. (2015) found" in labels
    epochs = " ".join(design_sections.curve_sentences("toy", "epochs",
                                                      summary[summary["axis"] == "epochs"], 95))
    assert "with 40 epochs (reference) the baseline reaches 72.2%" in epochs
    assert "with 100 epochs the baseline reaches 67.2%" in epochs and "The gain is largest with 100 epochs" in epochs


# --------------------------------------------------------------------------- the report


def build(tmp_path, name, designs_csv, params=PARAMS, dataset=EVIL):
    inputs = report_inputs(tmp_path, dataset=dataset)
    inputs["params"] = params
    out = tmp_path / name
    report.run(**inputs, out_html=out / "index.html", figures_dir=out / "figures", plots_dir=out / "plots",
               designs=designs_csv)
    return (out / "index.html").read_text(encoding="utf-8"), out


def images(html):
    return re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)


def test_report_with_and_without_designs(tmp_path):
    csv = tmp_path / "designs.csv"
    synthetic_designs().to_csv(csv, index=False)
    plain, _ = build(tmp_path, "plain", None)
    missing, _ = build(tmp_path, "missing", tmp_path / "no-such-designs.csv")
    assert 'id="designs"' not in plain and "Study designs" not in plain
    assert 'id="designs"' not in missing
    n_main = len(images(plain))

    html, out = build(tmp_path, "full", csv)
    sec = html.split('id="designs"')[1].split('id="walkthrough"')[0]
    for axis in design_stats.AXIS_ORDER:
        assert f'id="design-{axis}"' in sec and f'href="#design-{axis}"' in html
    assert "changes ONE factor" in sec and "paired by seed" in sec and "not corrected for multiple comparisons" in sec
    assert "40 epochs (distill.epochs)" in sec
    assert "most of the gain is augmentation" in sec
    assert "share of the ensemble&#39;s gain" in sec and "50% [50%, 50%]" in sec
    assert "gain over control (pp) [CI]" in sec  # the control column in the transfer table
    assert len(images(html)) == n_main + len(design_stats.AXIS_ORDER)
    for uri in images(html):
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    pngs = sorted(p.stem for p in (out / "figures" / slug("toy")).glob("*.png"))
    assert pngs == sorted(plotting.design_figure_key(axis) for axis in design_stats.AXIS_ORDER)
    prov = html.split('id="design-params"')[1].split('id="datasets"')[0]
    assert "designs.teacher_width" in prov and "transfer.folds" in prov
    assert "early_stopped, in_sample, cross_fitted, augmented (the first is the reference)" in prov

    again, _ = build(tmp_path, "again", csv)
    assert again == html  # deterministic

    some = tmp_path / "some.csv"
    synthetic_designs(axes=["transfer", "label_fraction"]).to_csv(some, index=False)
    part, _ = build(tmp_path, "part", some)
    sec = part.split('id="designs"')[1].split('id="walkthrough"')[0]
    assert 'id="design-transfer"' in sec and 'id="design-label_fraction"' in sec
    for axis in ("epochs", "teacher_width", "ensemble"):
        assert f'id="design-{axis}"' not in part
    assert len(images(part)) == n_main + 2


EVIL_LEVEL = '<img src=x onerror="alert(4)">'


def test_design_sentences_and_tables_name_the_reference_familys_size():
    """A cnn reference family: its students' sizes are channels, in sentences and tables;
    a designs table without `family` is read as today's mlp students."""
    d = synthetic_designs(axes=["teacher_width", "ensemble"], family="cnn")
    s = design_stats.level_summary(design_stats.normalise_designs(d))
    assert set(s["family"]) == {"cnn"}
    width = " ".join(design_sections.capacity_sentences("toy", "teacher_width", s[s["axis"] == "teacher_width"], 95))
    assert "Channels 16: gain over the baseline +1.0 pp" in width and "idden" not in width
    cols, _ = design_sections.design_table("teacher_width", s[s["axis"] == "teacher_width"])
    assert cols[1] == "channels"
    legacy = design_stats.level_summary(design_stats.normalise_designs(d.drop(columns="family")))
    assert set(legacy["family"]) == {"mlp"}
    assert legacy.drop(columns="family").equals(s.drop(columns="family"))


def test_design_strings_are_escaped(tmp_path):
    d = synthetic_designs(dataset=EVIL, axes=["transfer", "teacher_width"])
    d.loc[d["level"] == "in_sample", "level"] = EVIL_LEVEL
    csv = tmp_path / "designs.csv"
    d.to_csv(csv, index=False)
    params = {**PARAMS, "designs": {**PARAMS["designs"], "datasets": [EVIL], "transfer": [EVIL_LEVEL]}}
    html, _ = build(tmp_path, "evil", csv, params=params)
    assert EVIL not in html and EVIL_LEVEL not in html
    assert "<script" not in html.lower() and "onerror=\"" not in html
    sec = html.split('id="designs"')[1].split('id="walkthrough"')[0]
    assert "On &lt;script&gt;alert(1)&lt;/script&gt;, the hidden width 16 student" in sec
    assert "&lt;img src=x onerror=&#34;alert(4)&#34;&gt;" in sec
    assert len(images(html)) == len(plotting.STUDY_FIGURES) + 2 + 2  # main + walkthrough + two axes


def test_design_section_renders_in_headless_chromium(tmp_path):
    from browser import console_errors, ensure_chromium, full_page_screenshot, headless_chromium

    try:
        binaries = ensure_chromium()
    except RuntimeError as exc:
        pytest.fail(f"headless Chromium is needed and could not be installed: {exc}")
    csv = tmp_path / "designs.csv"
    synthetic_designs().to_csv(csv, index=False)
    _, out = build(tmp_path, "browser", csv)
    with headless_chromium(*binaries) as driver:
        driver.get((out / "index.html").as_uri())
        imgs = driver.execute_script(
            "return Array.from(document.querySelectorAll('#designs img')).map(i => i.naturalWidth)")
        sections = driver.execute_script(
            "return Array.from(document.querySelectorAll('#designs section[id]')).map(s => s.id)")
        full_page_screenshot(driver, tmp_path / "designs-full-page.png")
        errors = console_errors(driver)
    assert len(imgs) == len(design_stats.AXIS_ORDER) and all(w > 0 for w in imgs)
    assert sections == [f"design-{a}" for a in design_stats.AXIS_ORDER]
    assert errors == []


def test_ensemble_share_is_not_computed_for_a_sliver_of_a_gain():
    """+0.2 pp over the single teacher (2 test points in 1,000): a share would be noise over noise."""
    levels = copy.deepcopy(LEVELS)
    levels["ensemble"]["5"]["teacher"] = 0.952
    d = design_stats.normalise_designs(synthetic_designs(axes=["ensemble"], levels=levels))
    share = design_stats.ensemble_share(d)
    assert share["teacher_gain"].to_numpy() == pytest.approx(0.002)
    assert not share["denominator_ok"].any() and share["share"].isna().all()
    assert share["note"].str.contains("too small a gain to apportion").all()
    text = " ".join(design_sections.share_sentences("toy", share))
    assert "+0.2 pp" in text and "not computed" in text
