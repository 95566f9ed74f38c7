"""The HTML report: self-contained, escaped, deterministic, with one embedded
image per figure and the DVC plots table."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from distillstudy import cli, grid
from distillstudy.engine import datasets
from distillstudy.render import captions, plotting, tables, text
from distillstudy.stages import report
from distillstudy.analysis import stats
from html_tables import section_text, tables as html_tables
from synthetic import EVIL, SIZES, TEMPS, report_inputs, synthetic_results, two_family_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def inputs(tmp_path):
    return report_inputs(tmp_path)


def build(inputs, out_dir):
    report.run(**inputs, out_html=out_dir / "index.html", figures_dir=out_dir / "figures", plots_dir=out_dir / "plots")
    return (out_dir / "index.html").read_text(encoding="utf-8")


def test_report_is_escaped_self_contained_and_complete(inputs, tmp_path):
    html = build(inputs, tmp_path / "out")
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<script" not in html.lower()  # no scripts at all
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched from the network

    imgs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)
    n_figures = len(plotting.STUDY_FIGURES) * 1 + len(inputs["walkthrough_pngs"])
    assert len(imgs) == n_figures == len(re.findall(r"<img ", html))
    for uri in imgs:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # one folder per dataset, one PNG per figure key (the layout report.smk's patterns expect)
    pngs = sorted((tmp_path / "out" / "figures").glob("*/*.png"))
    assert [p.stem for p in pngs] == sorted(plotting.STUDY_FIGURES)
    assert pngs[0].parent.name == text.slug(EVIL)
    # one family: the panel is the dataset, headings and anchors as before families existed
    esc = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert re.findall(r"<h2>Dataset: ([^<]*)</h2>", html) == [esc]
    assert f'<section id="ds-{text.slug(EVIL)}">' in html and f'<section id="obj-{text.slug(EVIL)}">' in html
    assert not re.search(r"<h[23]>[^<]* students", html)
    assert "MLP students (hidden width 16, 64) trained on a teacher" in html
    assert html.count("<th>hidden width</th>") == 4 and "hidden size" not in html
    for key in plotting.STUDY_FIGURES:  # every figure has its title (grid.FIGURE_TITLES) and caption
        title = grid.FIGURE_TITLES[key]
        assert f"{title[:1].upper()}{title[1:]} (&lt;script&gt;" in html
        assert str(escape(captions.STUDY_CAPTIONS[key].format(conf=95))) in html
    assert "Hinton" in html and "reliability" in html.lower()

    summary = html.split('id="summary"')[1].split("</section>")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;: the best distilled configuration on the validation split" in summary
    assert "selected on the validation split" in html and "reported on the test split" in html
    # the synthetic gain grows with T, so T = 4 is best on validation for both sizes
    assert "temperature T = 4" in summary
    # teacher near one-hot on train -> warning
    assert "near one-hot" in summary
    assert "at every n" in html
    assert "deadbeef" in html and "12.2" in html and "ab" * 32 in html

    plots = pd.read_csv(tmp_path / "out" / "plots" / "acc_vs_temperature.csv", dtype={"temperature": str})
    assert list(plots.columns) == ["dataset", "family", "student_size", "model", "temperature", "test_accuracy"]
    assert set(plots["family"]) == {"mlp"}
    assert len(plots) == 2 * len(SIZES) * len(TEMPS)  # distilled cells + a flat baseline line per size
    assert set(plots["temperature"]) == set(TEMPS)
    base = plots[plots["model"] == "baseline"]
    assert (base.groupby("student_size")["test_accuracy"].nunique() == 1).all()

    # provenance section: every part the issue asks for is present
    prov = html.split('id="provenance"')[1]
    for anchor in ('id="environment"', 'id="parameters"', 'id="datasets"', 'id="walltime"'):
        assert anchor in prov
    assert "summed job wall time" in prov


def test_report_is_deterministic_and_warning_conditional(inputs, tmp_path):
    a = build(inputs, tmp_path / "a")
    b = build(inputs, tmp_path / "b")
    assert a == b
    synthetic_results("plain", teacher_mmp=0.9).to_csv(inputs["results"], index=False)
    inputs["benchmarks"] = []
    inputs["calibration"] = None
    c = build(inputs, tmp_path / "c")
    assert "near one-hot" not in c
    assert "plain: the best distilled configuration" in c
    assert "No benchmark data was recorded." in c
    # without calibration.csv the reliability diagrams are left out, nothing else
    assert len(re.findall(r"<img ", c)) == len(plotting.STUDY_FIGURES) - 1 + len(inputs["walkthrough_pngs"])
    assert not list((tmp_path / "c" / "figures").glob("*/reliability.png"))


def test_walkthrough_variance_table_and_sentence_and_its_absence(inputs, tmp_path):
    """The walkthrough section tables bias², variance and the ratio [CI] per n and model,
    and words its sentence from the CIs; without the file (None, or an older run's missing
    path) the section is as before, with no variance table."""
    html = build(inputs, tmp_path / "a")
    log_loss_table, variance = html_tables(html, "walkthrough")
    assert variance[0] == ["n (training points)", "model", "bias²", "variance", "variance ÷ student's [95% CI]"]
    assert variance[1:] == [["10", "student", "0.08", "0.1", "reference"],
                            ["10", "distilled", "0.07", "0.04", "0.40 [0.25, 0.60]"],
                            ["15", "student", "0.08", "0.1", "reference"],
                            ["15", "distilled", "0.07", "0.08", "0.80 [0.50, 1.20]"]]
    text = section_text(html, "walkthrough")
    assert ("Distilling from the teacher lowered the polynomial student's variance across training sets at 1 of 2 "
            "values of n (n = 10; 95% CI of the variance ratio below 1) and made no detectable difference to it at "
            "1 of 2 values of n (n = 15; 95% CI of the ratio includes 1)") in text
    for absent in (None, tmp_path / "missing.csv"):
        inputs["walkthrough_variance"] = absent
        html = build(inputs, tmp_path / "b")
        assert len(html_tables(html, "walkthrough")) == 1 and 'id="walkthrough-variance"' not in html
        assert "at every n" in section_text(html, "walkthrough")


def test_reliability_panels_follow_the_best_configuration_chosen_on_validation(inputs, tmp_path):
    df = stats.load_results(inputs["results"])
    best = stats.best_configuration(df).iloc[0]
    panels = tables.reliability_panels(best)
    assert [p["model"] for p in panels] == ["teacher", "baseline", "distilled"]
    assert panels[1]["student_size"] == panels[2]["student_size"] == int(best["student_size"])
    assert panels[2]["temperature"] == best["temperature"] == "4"
    cal = stats.load_calibration(inputs["calibration"])
    for p in panels:
        pooled = stats.pooled_reliability(cal, EVIL, p["model"], p["student_size"], p["temperature"], p["alpha"])
        assert pooled.attrs["n_seeds"] == (1 if p["model"] == "teacher" else 3)
        assert 0 <= pooled.attrs["ece"] <= 1


def _section(html: str, heading: str) -> str:
    return html.split(heading, 1)[1].split("</section>", 1)[0]


def test_two_families_get_a_panel_each_with_their_figures_and_nouns(tmp_path):
    """mlp and cnn students of the same sizes on one dataset: two panels (in
    distill.students' order, mlp first), each with its own figure folder, its noun
    (hidden width / channels) and its own numbers; the dataset's teacher in both."""
    inputs = report_inputs(tmp_path, dataset="toy", two_families=True)
    inputs["params"]["prepare"] = {"datasets": [{"name": "toy", "teacher": {"logits": "offline.npz"}}]}
    html = build(inputs, tmp_path / "out")
    labels = ["toy · mlp students", "toy · cnn students"]
    assert re.findall(r"<h2>Dataset: ([^<]*)</h2>", html) == labels
    assert re.findall(r"<h3>([^<]*): test-accuracy gain over the baseline, by objective</h3>", html) == labels
    folders = tmp_path / "out" / "figures"
    assert sorted(p.name for p in folders.iterdir()) == sorted(text.slug(label) for label in labels)
    for label in labels:
        assert sorted(p.stem for p in (folders / text.slug(label)).glob("*.png")) == sorted(plotting.STUDY_FIGURES)
        assert f'<section id="ds-{text.slug(label)}">' in html
    assert len(re.findall(r"<img ", html)) == 2 * len(plotting.STUDY_FIGURES) + len(inputs["walkthrough_pngs"])
    assert "MLP students (hidden width 16, 64) and CNN students (channels 16, 64) trained" in html

    mlp, cnn = (_section(html, f"<h2>Dataset: {label}</h2>") for label in labels)
    assert "<th>hidden width</th>" in mlp and "channels" not in mlp
    assert "<th>channels</th>" in cnn and "hidden width" not in cnn
    for section in (mlp, cnn):  # the dataset's teacher, looked up by the dataset's name
        assert "Teacher (offline logits from offline.npz, not trained here)" in section
    # the planted effect is the cnn's: its best configuration's CI excludes zero, the mlp's does not
    assert "toy · cnn students: the best distilled configuration on the validation split is channels" in html
    assert re.search(r"toy · cnn students: [^<]*its CI excludes zero", html)
    assert re.search(r"toy · mlp students: [^<]*its CI includes zero", html)
    objectives = _section(html, "<h3>toy · cnn students: test-accuracy gain")
    assert "<th>channels</th>" in objectives and "Channels 16: dkd is best on validation" in objectives
    # the first screen's answer: one sentence for the dataset, both families in it, each gain it
    # quotes the very cell of the objectives table (the validation-best objective at that size)
    answer = section_text(html, "answer")
    assert answer.count("toy, against the hard-label baseline: ") == 1
    helps = re.findall(r"the (\d+)-channel CNN by ([^(]+) \((\w+)", answer)
    assert len(helps) == 2 and "MLP" in answer and not re.search(r"helps[^;]*MLP", answer)
    cnn_table = html_tables(html, f"obj-{text.slug('toy · cnn students')}")[0]
    for size, quoted, objective in helps:
        row = next(r for r in cnn_table[1:] if r[0] == size)
        assert row[cnn_table[0].index(objective)].startswith(f"★ {quoted}")

    plots = pd.read_csv(tmp_path / "out" / "plots" / "acc_vs_temperature.csv", dtype={"temperature": str})
    assert len(plots) == 2 * 2 * len(SIZES) * len(TEMPS)
    assert (plots.groupby(["family", "student_size", "model", "temperature"]).size() == 1).all()


def test_a_figure_refuses_two_families(tmp_path):
    """Sizes of two families mean different things: a figure given both is an error, not a mix."""
    from distillstudy.render import figures
    df = stats.normalise_results(two_family_results("toy"))
    with pytest.raises(ValueError, match="one student family"):
        figures.plot_gain_heatmap(df, "toy", tmp_path / "x.png")
    figures.plot_gain_heatmap(df[df["family"] != "mlp"], "toy", tmp_path / "cnn.png")
    assert (tmp_path / "cnn.png").exists()


def test_every_figure_has_a_snakemake_report_caption_and_label():
    """`snakemake --report` shows workflow/report/figures.rst for each figure PNG,
    picking the text by the figure key; common.smk labels each figure from grid.FIGURE_TITLES."""
    rst = (ROOT / "workflow/report/figures.rst").read_text()
    common = (ROOT / "workflow/rules/common.smk").read_text()
    design_keys = [plotting.design_figure_key(axis) for axis in (*grid.AXES, "variance", "generations")]
    assert list(plotting.STUDY_FIGURES) + design_keys == list(grid.FIGURE_TITLES)
    assert list(captions.STUDY_CAPTIONS) + list(captions.DESIGN_CAPTIONS) == list(grid.FIGURE_TITLES)
    for key in grid.FIGURE_TITLES:
        assert f'f == "{key}"' in rst, key
    assert 'FIGURE_TITLES.get(wildcards.figure' in common
    assert 'patterns=["{dataset}/{figure}.png"]' in (ROOT / "workflow/rules/report.smk").read_text()


EVIL_NAME = '<i onmouseover="alert(2)">evil</i>'
EVIL_PARAM = "</pre><script>alert(3)</script>"


def test_csv_column_dataset_name_and_params_are_escaped(tmp_path):
    """A user CSV whose feature column is named <script>alert(1)</script>, a dataset
    name and a params value with HTML: the report built by `distillstudy report`
    shows them as text, lists the feature names, and contains no markup of theirs."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({EVIL: rng.normal(size=60), "x2": rng.normal(size=60),
                          "species": np.repeat(["a", "b", "c"], 20)})
    csv = tmp_path / "evil.csv"
    table.to_csv(csv, index=False)
    meta = datasets.prepare(EVIL_NAME, "csv", tmp_path / "evil.npz", tmp_path / "evil.json", seed=0,
                            val_fraction=0.2, test_fraction=0.2, path=str(csv), label="species")
    assert meta["feature_names"] == [EVIL, "x2"]
    inputs = report_inputs(tmp_path, dataset=EVIL_NAME)
    params = {"prepare": {"datasets": [{"name": EVIL_NAME, "kind": "csv", "path": str(csv), "label": "species"}]},
              "report": {"title": EVIL_PARAM}}
    out = tmp_path / "out"
    rc = cli.main(["report", "--results", str(inputs["results"]), "--calibration", str(inputs["calibration"]),
                   "--walkthrough", str(inputs["walkthrough"]),
                   "--walkthrough-pngs", *map(str, inputs["walkthrough_pngs"]),
                   "--walkthrough-variance", str(inputs["walkthrough_variance"]),
                   "--dataset-meta", str(tmp_path / "evil.json"), "--params-json", json.dumps(params),
                   "--out-html", str(out / "index.html"), "--figures-dir", str(out / "figures"),
                   "--plots-dir", str(out / "plots")])
    assert rc == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    for raw in (EVIL, EVIL_NAME, EVIL_PARAM):
        assert raw not in html
    assert "<script" not in html.lower() and "onmouseover=" not in html.replace("onmouseover=&#34;", "")
    esc_col = "&lt;script&gt;alert(1)&lt;/script&gt;"
    esc_name = "&lt;i onmouseover=&#34;alert(2)&#34;&gt;evil&lt;/i&gt;"
    esc_param = "&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;"
    assert f"<title>{esc_param}</title>" in html and f"<h1>{esc_param}</h1>" in html
    assert f"name: {esc_name}" in html  # the params dump
    summary = html.split('id="summary"')[1].split("</section>")[0]
    assert f"{esc_name}: the best distilled configuration" in summary
    # the Datasets section lists the CSV's feature names, escaped
    ds = html.split('id="datasets"')[1].split('id="walltime"')[0]
    assert f"<code>{esc_col}</code>, <code>x2</code>" in ds
    assert f"<td>{esc_name}</td>" in ds and meta["sha256"] in ds
