"""`dvc plots show` renders the main curves declared in dvc.yaml (accuracy against
temperature, the walkthrough's log loss, the standard engine's training curves) from the
tables the report and evaluate stages write.
A DVC repository is made in a tmp dir with synthetic tables: seconds, no study run."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from conftest import ROOT, run
from distillstudy.analysis import curves
from distillstudy.stages import report
from synthetic import SIZES, TEMPS, report_inputs


def test_dvc_plots_show_renders_the_main_curves(tmp_path):
    repo = tmp_path / "repo"
    (repo / "workflow").mkdir(parents=True)
    shutil.copy2(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(ROOT / "workflow" / "report", repo / "workflow" / "report")
    inputs = report_inputs(tmp_path, dataset="toy")
    reports = repo / "reports"
    report.run(**inputs, out_html=reports / "index.html", figures_dir=reports / "figures", plots_dir=reports / "plots")
    shutil.copy2(inputs["walkthrough"], reports / "walkthrough.csv")
    history = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "val_accuracy": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    cell = {"dataset": "toy", "family": "resnet", "student_size": 4, "cell": "baseline", "seeds": [11, 12],
            "curves": [history, history]}
    curves.curves_frame(curves.cell_curves(cell)).to_csv(reports / "training_curves.csv", index=False)
    run(["dvc", "init", "--no-scm", "-q"], repo)

    proc = run(["dvc", "plots", "show", "--json"], repo)
    shown = json.loads(proc.stdout)
    assert not shown.get("errors"), shown.get("errors")
    data = shown["data"]
    assert {"accuracy_vs_temperature", "walkthrough_log_loss", "training_curves"} <= set(data)
    trained = data["training_curves"][0]["content"]
    assert trained["encoding"]["x"]["field"] == "epoch" and trained["encoding"]["y"]["field"] == "val_accuracy"
    values = pd.DataFrame(trained["data"]["values"])
    assert len(values) == 6 and set(values["seed"].astype(int)) == {11, 12}

    acc = data["accuracy_vs_temperature"][0]["content"]
    assert acc["facet"]["field"] == "dataset"  # the custom template was used and filled
    enc = acc["spec"]["encoding"]
    assert enc["x"]["field"] == "temperature" and enc["y"]["field"] == "test_accuracy"
    values = pd.DataFrame(acc["data"]["values"])
    assert len(values) == 2 * len(SIZES) * len(TEMPS)
    assert set(values["model"]) == {"distilled", "baseline"}
    assert set(values["student_size"]) == {str(s) for s in SIZES}
    assert set(values["family"]) == {"mlp"}
    # the template colours one line per student (family and size): its transform names them
    assert {t.get("as") for t in acc["transform"]} >= {"student", "size"} and enc["color"]["field"] == "student"

    wt = data["walkthrough_log_loss"][0]["content"]
    assert wt["facet"]["field"] == "split"
    values = pd.DataFrame(wt["data"]["values"])
    assert set(values["model"]) == {"student", "distilled", "teacher"}
    assert set(values["split"]) == {"train", "test"}

    out = tmp_path / "html"
    proc = run(["dvc", "plots", "show", "-o", str(out)], repo)
    assert "failed" not in (proc.stdout + proc.stderr).lower()
    html = (out / "index.html").read_text()
    assert "accuracy_vs_temperature" in html and "walkthrough_log_loss" in html and "vegaEmbed" in html
