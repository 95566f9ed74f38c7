"""The evaluate stage on synthetic logits: calibration.csv beside results.csv,
bins that reproduce the ECE in results.csv, and byte-identical reruns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from distillstudy.grid import hyper_columns, parse_cell
from distillstudy.analysis import scoring
from distillstudy.stages import evaluate
from distillstudy.analysis import metrics
from distillstudy.artifacts import save_npz

N_BINS = 15


def test_reliability_bins_reproduce_ece():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 3
    y = rng.integers(0, 5, size=500)
    bins = scoring.reliability_bins(logits, y, N_BINS)
    assert [b["bin"] for b in bins] == list(range(N_BINS))
    assert sum(b["count"] for b in bins) == 500
    conf = metrics.softmax(logits).max(axis=1)
    for b in bins:
        assert b["bin_lower"] == pytest.approx(b["bin"] / N_BINS)
        if b["count"]:
            assert b["bin_lower"] < b["mean_confidence"] <= b["bin_upper"]
        else:
            assert np.isnan(b["mean_confidence"]) and np.isnan(b["accuracy"])
    ece = sum(b["count"] * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["count"]) / 500
    assert ece == pytest.approx(metrics.ece(logits, y, N_BINS), rel=1e-12)
    assert conf.max() <= 1.0
    # bins are (i/B, (i+1)/B]: confidence 1 falls in the last bin, exactly 0.5 (of B = 2) in the first
    edge = scoring.reliability_bins(np.array([[50.0, 0.0]]), np.array([0]), 2)
    assert [b["count"] for b in edge] == [0, 1]
    half = scoring.reliability_bins(np.array([[0.0, 0.0]]), np.array([0]), 2)
    assert [b["count"] for b in half] == [1, 0]


def _write_study(tmp_path, families=(None,)):
    """One dataset, its teacher, and a baseline and a kd cell of size 8 per family in
    `families` (None: a record written before student families, without `family`)."""
    rng = np.random.default_rng(1)
    n = {"train": 40, "val": 20, "test": 30}
    data = {f"y_{s}": rng.integers(0, 3, size=k) for s, k in n.items()}
    save_npz(tmp_path / "d.npz", {**data, **{f"x_{s}": rng.normal(size=(k, 2)).astype(np.float32)
                                             for s, k in n.items()}})
    save_npz(tmp_path / "d.logits.npz", {f"logits_{s}": rng.normal(size=(k, 3)).astype(np.float32) * 2
                                         for s, k in n.items()})
    (tmp_path / "d.json").write_text(json.dumps({"dataset": "d", "seed": 5, "n_params": 100}))
    cells = []
    for k, family in enumerate(families):
        for cell in ("baseline", "kd_T2_mix0.9"):
            spec = parse_cell(cell)  # the record's fields as the distill stage writes them
            record = {"dataset": "d", "student_size": 8, **spec, **hyper_columns(spec["hyper"]),
                      "seeds": [11 + 10 * k, 12 + 10 * k], "n_params": 50, **({"family": family} if family else {})}
            path = tmp_path / f"{family or 'h'}-{cell}.logits.npz"
            save_npz(path, {**{f"logits_{s}": rng.normal(size=(2, m, 3)).astype(np.float32) for s, m in n.items()},
                            "record": np.array(json.dumps(record, sort_keys=True))})
            cells.append(str(path))
    return dict(data=[str(tmp_path / "d.npz")], teachers=[str(tmp_path / "d.logits.npz")],
                teacher_meta=[str(tmp_path / "d.json")], cells=cells, ece_bins=N_BINS)


def test_run_writes_calibration_beside_results_deterministically(tmp_path):
    args = _write_study(tmp_path)
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        evaluate.run(**args, out_results=str(out / "results.csv"), out_metrics=str(out / "metrics.json"))
    for name in ("results.csv", "metrics.json", "calibration.csv"):
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name

    cal = pd.read_csv(out_a / "calibration.csv", dtype={"temperature": str, "student_size": str},
                      keep_default_na=False, na_values=[""])
    assert list(cal.columns) == scoring.CALIBRATION_COLUMNS
    assert set(cal["split"]) == {"test"}
    # every model and seed: all bins, counts adding up to the test size
    per = cal.groupby(["model", "seed"])
    assert (per.size() == N_BINS).all() and (per["count"].sum() == 30).all()
    assert sorted(per.groups) == [("baseline", 11), ("baseline", 12), ("distilled", 11), ("distilled", 12),
                                  ("teacher", 5)]
    assert set(cal.loc[cal.model == "distilled", "temperature"]) == {"2"}
    # the bins reproduce results.csv's test ECE for every model and seed
    res = pd.read_csv(out_a / "results.csv")
    ece = res[(res.metric == "ece") & (res.split == "test")].set_index(["model", "seed"])["value"]
    gap = (cal["accuracy"] - cal["mean_confidence"]).abs().fillna(0) * cal["count"]
    from_bins = gap.groupby([cal["model"], cal["seed"]]).sum() / 30
    for key, value in from_bins.items():
        assert value == pytest.approx(ece.loc[key], abs=1e-9)

    explicit = tmp_path / "elsewhere" / "cal.csv"
    evaluate.run(**args, out_results=str(tmp_path / "c" / "results.csv"),
                 out_metrics=str(tmp_path / "c" / "metrics.json"), out_calibration=str(explicit))
    assert explicit.read_bytes() == (out_a / "calibration.csv").read_bytes()


def test_family_column_from_the_records_and_metrics_keyed_by_student(tmp_path):
    """A record without `family` (written before families) is today's mlp; a cnn of the
    same size is another student: its own rows, bins and metrics.json key ("cnn-8")."""
    args = _write_study(tmp_path, families=(None, "cnn"))
    evaluate.run(**args, out_results=str(tmp_path / "results.csv"), out_metrics=str(tmp_path / "metrics.json"))
    res = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert list(res.columns[:3]) == ["dataset", "family", "model"]
    assert list(dict.fromkeys(res["family"])) == ["", "cnn", "mlp"]  # teacher first, families alphabetically
    assert set(res.loc[res["family"] == "", "model"]) == {"teacher"}
    assert set(res.loc[res["family"] == "cnn", "seed"]) == {"21", "22"}
    assert set(res.loc[res["family"] == "mlp", "seed"]) == {"11", "12"}
    cal = pd.read_csv(tmp_path / "calibration.csv", dtype=str, keep_default_na=False)
    assert cal.groupby("family").size().to_dict() == {"": N_BINS, "cnn": 4 * N_BINS, "mlp": 4 * N_BINS}
    metrics_json = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics_json["d"]) == {"teacher", "h8", "cnn-8"}
    assert [metrics_json["d"][s]["best_temperature_on_val"] for s in ("h8", "cnn-8")] == ["2", "2"]
