"""Student sizes that are names (the cifar zoo's "resnet8x4") beside sizes that are numbers
(mlp widths): results.csv and calibration.csv load, the statistics select and pair within
each student, the evaluate stage's sort and metrics.json keep every student apart, and the
report draws and words a zoo student by its name. A table of numbers only keeps its Int64
sizes (the default study's files are unchanged).

The zoo students here are the synthetic cnn-like family of tests/synthetic.py with its sizes
16 and 64 renamed "resnet8x4" and "wrn_16_2" (the same order in both vocabularies), so every
statistic of a named student must equal that of its numbered twin."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from distillstudy.analysis import objective_stats, scoring, stats
from distillstudy.render import plots
from distillstudy.render.text import slug
from distillstudy.stages import report
from distillstudy.students import size_order, size_text, size_value
from html_tables import section_text, tables as html_tables
from synthetic import SIZES, report_inputs, synthetic_calibration, synthetic_results

NAMES = {16: "resnet8x4", 64: "wrn_16_2"}
ZOO = {"family": "cifar", "sizes": [NAMES[s] for s in SIZES]}


def _renamed(frame: pd.DataFrame) -> pd.DataFrame:
    """The cifar family's rows with their sizes renamed (NAMES); other rows as they are."""
    out = frame.copy().astype({"student_size": object})
    zoo = out["family"] == "cifar"
    out.loc[zoo, "student_size"] = out.loc[zoo, "student_size"].map(NAMES)
    return out


def numbered(dataset: str = "toy") -> pd.DataFrame:
    """mlp students (no planted effect) and the cifar family still under numbers."""
    return pd.concat([synthetic_results(dataset, family="mlp", gain_scale=0.0),
                      synthetic_results(dataset, family="cifar", offset=0.02, teacher=False, rng_seed=7)],
                     ignore_index=True)


def mixed(dataset: str = "toy") -> pd.DataFrame:
    """The same results, the cifar students named: results.csv's `student_size` holds both."""
    return _renamed(numbered(dataset))


def _loaded(frame: pd.DataFrame, tmp_path, name: str = "results.csv") -> pd.DataFrame:
    frame.to_csv(tmp_path / name, index=False)
    return stats.load_results(tmp_path / name)


def test_sizes_sort_numbers_first_then_names():
    ordered = sorted(["wrn_16_2", 64, "resnet8x4", "16", 8], key=size_order)
    assert [size_value(s) for s in ordered] == [8, 16, 64, "resnet8x4", "wrn_16_2"]
    assert size_value("16") == 16 and size_value(np.int64(8)) == 8 and size_value("resnet8x4") == "resnet8x4"
    assert size_text("hidden width", 16) == "hidden width 16"
    assert size_text("model", "resnet8x4") == "resnet8x4"  # a name stands alone
    # a typed column holding both sorts (on several keys, as every table is sorted) and groups in
    # that same order, the teacher's blank size first where asked
    sizes = stats.size_column(pd.Series(["wrn_16_2", "", "64", "resnet8x4", "8"], dtype=object))
    frame = pd.DataFrame({"student_size": sizes, "seed": 0})
    ordered = frame.sort_values(["student_size", "seed"], kind="mergesort", na_position="first")["student_size"]
    assert ordered.iloc[0] is pd.NA and list(ordered.iloc[1:]) == [8, 64, "resnet8x4", "wrn_16_2"]
    assert list(frame.groupby("student_size").groups) == [8, 64, "resnet8x4", "wrn_16_2"]


def test_an_all_numeric_table_keeps_int64_sizes(tmp_path):
    df = _loaded(synthetic_results("toy"), tmp_path)
    assert str(df["student_size"].dtype) == "Int64"
    assert df["student_size"].isna().sum() == (df["model"] == "teacher").sum()
    assert str(stats.size_column(pd.Series(["16", "", "8.0", None])).dtype) == "Int64"
    for table in (stats.paired_gains(df, "accuracy", "test"), stats.best_temperature(df),
                  objective_stats.select_objectives(df)):
        assert str(table["student_size"].dtype) == "Int64"


def test_named_and_numbered_sizes_load_and_keep_their_kind(tmp_path):
    df = _loaded(mixed(), tmp_path)
    assert df["student_size"].dtype == object
    sizes = df.loc[df["model"] != "teacher"].groupby("family")["student_size"].unique()
    assert sorted(sizes["mlp"]) == list(SIZES) and all(type(s) is int for s in sizes["mlp"])
    assert sorted(sizes["cifar"]) == sorted(NAMES.values())
    assert df.loc[df["model"] == "teacher", "student_size"].isna().all()
    # normalising again (every statistic does) changes nothing
    again = stats.normalise_results(df)
    assert again["student_size"].tolist() == df["student_size"].tolist()


@pytest.mark.parametrize("table", ["select", "compare", "best_t", "best_cfg", "gains", "cells"])
def test_a_named_student_gets_the_statistics_of_its_numbered_twin(tmp_path, table):
    """Pairing, selection and Holm's families never look at what a size is called."""
    compute = {
        "select": lambda d: objective_stats.select_objectives(d),
        "compare": lambda d: objective_stats.compare_objectives(d),
        "best_t": lambda d: stats.best_temperature(d),
        "best_cfg": lambda d: stats.best_configuration(d),
        "gains": lambda d: stats.paired_gains(d, "accuracy", "test"),
        "cells": lambda d: stats.cell_summary(d, "accuracy", "test"),
    }[table]
    named = compute(_loaded(mixed(), tmp_path, "named.csv"))
    twin = compute(_loaded(numbered(), tmp_path, "numbered.csv"))
    assert len(named) == len(twin) and len(named) > 0
    expected = _renamed(twin).reset_index(drop=True)
    expected["student_size"] = stats.size_column(expected["student_size"])
    pd.testing.assert_frame_equal(named.reset_index(drop=True), expected)
    # rows: families alphabetically (the teacher's "" first), each family's students in size order
    assert list(dict.fromkeys(named["family"])) == sorted(set(named["family"]))
    for _, rows in named[named["family"] != ""].groupby("family"):
        order = [size_order(s) for s in rows["student_size"]]
        assert order == sorted(order)


def test_evaluate_sorts_each_student_together_and_metrics_json_names_it(tmp_path):
    raw = mixed().astype({"student_size": str, "temperature": str})  # as evaluate hands them over
    rows = scoring.sort_results(raw)
    assert rows["model"].iloc[0] == "teacher"
    zoo = rows[rows["family"] == "cifar"]
    # one student's rows together (not interleaved by model), in name order
    assert list(dict.fromkeys(zoo["student_size"])) == ["resnet8x4", "wrn_16_2"]
    assert zoo["student_size"].is_monotonic_increasing
    summary = scoring.summarise(rows)
    assert set(summary["toy"]) == {"teacher", "h16", "h64", "cifar-resnet8x4", "cifar-wrn_16_2"}
    twin = scoring.summarise(scoring.sort_results(numbered().astype({"student_size": str, "temperature": str})))
    assert summary["toy"]["cifar-resnet8x4"] == twin["toy"]["cifar-16"]
    json.dumps(summary, allow_nan=False)


def test_calibration_bins_of_a_named_student_load_and_pool(tmp_path):
    bins = synthetic_calibration("toy", families=("mlp", "cifar"))
    _renamed(bins).to_csv(tmp_path / "calibration.csv", index=False)
    cal = stats.load_calibration(tmp_path / "calibration.csv")
    assert cal["student_size"].dtype == object
    pooled = stats.pooled_reliability(cal, "toy", "baseline", "resnet8x4", family="cifar")
    assert pooled.attrs["n_seeds"] == 3 and pooled["count"].sum() > 0
    bins.to_csv(tmp_path / "numbered.csv", index=False)
    twin = stats.pooled_reliability(stats.load_calibration(tmp_path / "numbered.csv"), "toy", "baseline", 16,
                                    family="cifar")
    pd.testing.assert_frame_equal(pooled, twin)


def test_the_dvc_plots_table_keeps_numbers_before_names(tmp_path):
    table = plots.accuracy_vs_temperature(_loaded(mixed(), tmp_path))
    students = list(dict.fromkeys(zip(table["family"], table["student_size"])))
    assert students == [("cifar", "resnet8x4"), ("cifar", "wrn_16_2"), ("mlp", 16), ("mlp", 64)]


def test_the_report_draws_and_words_a_zoo_student_by_its_name(tmp_path):
    inputs = report_inputs(tmp_path, dataset="toy", two_families=True)
    mixed().to_csv(inputs["results"], index=False)
    _renamed(synthetic_calibration("toy", families=("mlp", "cifar"))).to_csv(inputs["calibration"], index=False)
    inputs["params"]["distill"]["students"] = [{"family": "mlp", "sizes": list(SIZES)}, ZOO]
    inputs["params"]["prepare"] = {"datasets": [{"name": "toy", "teacher": {"family": "cifar", "size": "resnet32x4"}}]}
    out = tmp_path / "out"
    report.run(**inputs, out_html=out / "index.html", figures_dir=out / "figures", plots_dir=out / "plots")
    html = (out / "index.html").read_text(encoding="utf-8")

    assert "MLP students (hidden width 16, 64) and CIFAR-zoo students (resnet8x4, wrn_16_2) trained" in html
    labels = re.findall(r"<h2>Dataset: ([^<]*)</h2>", html)
    assert labels == ["toy · mlp students", "toy · cifar students"]
    assert "Teacher (resnet32x4, a CIFAR-zoo model trained here)" in html
    zoo = html.split("<h2>Dataset: toy · cifar students</h2>", 1)[1].split("</section>", 1)[0]
    assert "<th>student</th>" in zoo and "model resnet8x4" not in html
    said = re.search(r"toy · cifar students: the best distilled configuration on the validation split is "
                     r"(\w+) at temperature[^<]*baseline of the same (\w+) is", html)
    assert said and said[1] in NAMES.values() and said[2] == "student"
    assert re.search(r"(of 2 students have a|None of the 2 per-student) best-on-validation", html)
    # the objectives table: one row per named student, in name order, its sentences by name
    table = html_tables(html, f"obj-{slug('toy · cifar students')}")[0]
    assert table[0][0] == "student" and [r[0] for r in table[1:]] == ["resnet8x4", "wrn_16_2"]
    objectives = section_text(html, f"obj-{slug('toy · cifar students')}")
    assert re.search(r"resnet8x4: \w+ is best on validation", objectives)
    assert "at this size" not in objectives and "Each cell is one objective at one student." in objectives
    # the mlp panel reads as before
    mlp_table = html_tables(html, f"obj-{slug('toy · mlp students')}")[0]
    assert mlp_table[0][0] == "hidden width" and [r[0] for r in mlp_table[1:]] == ["16", "64"]
    # the first screen: the zoo students by name
    answer = section_text(html, "answer")
    assert "the resnet8x4 student" in answer or "the resnet8x4 and wrn_16_2 students" in answer
    for name in ("gain_heatmap", "best_t", "fidelity", "reliability", "accuracy_vs_t"):
        assert (out / "figures" / slug("toy · cifar students") / f"{name}.png").stat().st_size > 1000
