"""The report's first screen, "Which objective?", built by the report stage from synthetic
inputs: one table per dataset (sizes x objectives), validation selection stated, the best
marked only where its CI excludes zero, the sentences, the Holm option, the figure, and
every user string escaped."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from html_tables import section_text, tables
from synthetic import EVIL, SIZES, report_inputs, synthetic_results

from distillstudy.analysis import objective_stats, stats
from distillstudy.render import objectives as render_objectives
from distillstudy.render import plotting, text
from distillstudy.stages import report

ESC = "&lt;script&gt;alert(1)&lt;/script&gt;"


def build(inputs, out_dir):
    report.run(**inputs, out_html=out_dir / "index.html", figures_dir=out_dir / "figures", plots_dir=out_dir / "plots")
    return (out_dir / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("objectives")
    inputs = report_inputs(tmp)
    return inputs, build(inputs, tmp / "out"), tmp / "out"


def _objectives_html(html: str) -> str:
    return html.split('<section id="objectives">')[1].split('<section id="summary">')[0]


def test_first_screen_is_the_objectives_table(built):
    inputs, html, _ = built
    body = html.split("<body>")[1]
    assert body.index('id="objectives"') < body.index('id="summary"') < body.index(f'id="ds-{text.slug(EVIL)}"')
    main, holm = tables(html, "objectives")
    assert main[0] == ["hidden width", *objective_stats.ORDER]
    assert holm[0] == ["hidden width", *(f"{o} (Holm)" for o in objective_stats.ORDER)]
    assert [r[0] for r in main[1:]] == [str(s) for s in SIZES] == [r[0] for r in holm[1:]]
    sel = objective_stats.select_objectives(stats.load_results(inputs["results"]))
    for r in main[1:]:
        for objective, cell in zip(objective_stats.ORDER, r[1:]):
            s = sel[(sel["student_size"] == int(r[0])) & (sel["objective"] == objective)].iloc[0]
            gain = text.gain_text(s["gain_mean"], s["gain_lo"], s["gain_hi"])
            assert cell.removeprefix("★ ").startswith(gain), (cell, gain)
            # the selected setting and alpha, in small text beneath
            assert f"α = {s['alpha']:g}" in cell and (s["setting"] in cell)
    # the planted best setting of dkd was chosen on validation at both sizes
    dkd = [r[1 + objective_stats.ORDER.index("dkd")] for r in main[1:]]
    assert all("alpha1_beta8_T4 · α = 0.5" in c for c in dkd)


def test_validation_selection_and_the_interval_shown_are_stated(built):
    _, html, _ = built
    words = section_text(html, "objectives")
    assert "were chosen on the validation split" in words and "The test split played no part in any choice" in words
    assert "paired by seed" in words and "Student-t 95% CI" in words
    assert "Shown: unadjusted 95% intervals" in words and "open the Holm-adjusted table below" in words
    assert "<details class=\"holm\">" in _objectives_html(html)
    assert "Holm's step-down correction (statsmodels, method \"holm\"" in words
    assert "excludes zero exactly when Holm rejects" in words and "not simultaneous intervals" in words


def _stars(table_html: str) -> dict:
    """hidden width -> the column indexes (0 = first objective) of the cells marked best."""
    out = {}
    for tr in re.findall(r"<tr><td class=\"num\">(\d+)</td>(.*?)</tr>", table_html, re.DOTALL):
        cells = re.findall(r"<td class=\"num ([^\"]*)\">(.*?)</td>", tr[1], re.DOTALL)
        out[int(tr[0])] = [i for i, (cls, body) in enumerate(cells) if "★" in body]
        for i, (cls, body) in enumerate(cells):
            assert ("best" in cls.split()) == ("★" in body)
    return out


def test_the_best_is_marked_only_where_its_ci_excludes_zero(built):
    inputs, html, _ = built
    df = stats.load_results(inputs["results"])
    sel = objective_stats.select_objectives(df)
    cmp = objective_stats.compare_objectives(df, sel)
    part = _objectives_html(html)
    main_html, holm_html = part.split('<details class="holm">')
    for table_html, lo, hi, sig in ((main_html, "gain_lo", "gain_hi", "significant"),
                                    (holm_html, "holm_lo", "holm_hi", "holm_significant")):
        stars = _stars(table_html)
        for s in SIZES:
            best = cmp[cmp["student_size"] == s]["best"].iloc[0]
            r = sel[(sel["student_size"] == s) & (sel["objective"] == best)].iloc[0]
            marked = bool(r[sig]) and r[lo] > 0
            assert stars[s] == ([objective_stats.ORDER.index(best)] if marked else [])
    # the synthetic data: at size 16 the best (dkd or dist, planted 3.0 and 2.9 pp) is marked;
    # at size 64 dkd is best on validation but its CI includes zero: nothing is marked
    assert _stars(main_html)[16] and _stars(main_html)[64] == []


def test_sentences_say_which_objectives_can_and_cannot_be_told_apart(built):
    inputs, html, _ = built
    words = section_text(html, "objectives")
    df = stats.load_results(inputs["results"])
    cmp = objective_stats.compare_objectives(df)
    for s in SIZES:
        c = cmp[cmp["student_size"] == s]
        assert f"Hidden width {s}: {c['best'].iloc[0]} is best on validation" in words
    # dkd and dist (3.0 vs 2.9 pp planted) cannot be told apart at size 16; nkd (harmful) can
    c16 = cmp[cmp["student_size"] == 16]
    pair = {"dkd", "dist"} - {c16["best"].iloc[0]}
    assert not c16[c16["other"].isin(pair)]["told_apart"].any() and c16[c16["other"] == "nkd"]["told_apart"].all()
    sentence = next(t for t in render_objectives.size_sentences(
        objective_stats.select_objectives(df), cmp, 95) if t.startswith("Hidden width 16"))
    assert f"It cannot be told apart from {pair.pop()} (" in sentence and "nkd (+" in sentence
    # with Holm's intervals size 64 has no difference that excludes zero: said plainly
    assert "Hidden width 64: dkd is best on validation" in words
    assert "The objectives cannot be told apart at this size: the Holm-adjusted interval" in words


def test_the_objectives_figure_comes_first_and_is_written(built):
    _, html, out = built
    assert plotting.STUDY_FIGURES[0] == "objectives"
    assert (out / "figures" / text.slug(EVIL) / "objectives.png").exists()
    part = _objectives_html(html)
    assert len(re.findall(r"<img ", part)) == 1
    assert f"Objective comparison: validation-selected test gain ({ESC})" in part


def test_everything_is_escaped(built):
    _, html, _ = built
    part = _objectives_html(html)
    assert EVIL not in html and "<script" not in html.lower()
    assert f"<h3>{ESC}: test-accuracy gain over the baseline, by objective</h3>" in part
    assert f'alt="Objective comparison: validation-selected test gain, dataset {ESC}"' in part
    assert f'<a href="#obj-{text.slug(EVIL)}">{ESC}</a>' in html


def test_an_old_kd_only_table_still_renders(tmp_path):
    """results.csv from before the objectives columns: one column (kd), nothing to compare."""
    inputs = report_inputs(tmp_path)
    old = synthetic_results(EVIL)
    old = old[old["model"].isin(["teacher", "baseline", "distilled"])]
    old = old.drop(columns=["objective", "setting", "beta", "gamma", "dkd_alpha"])
    old.to_csv(inputs["results"], index=False)
    cal = pd.read_csv(inputs["calibration"], dtype=str, keep_default_na=False)
    cal.drop(columns=["objective", "setting", "beta", "gamma", "dkd_alpha"]).to_csv(inputs["calibration"],
                                                                                   index=False)
    html = build(inputs, tmp_path / "out")
    main, _ = tables(html, "objectives")
    assert main[0] == ["hidden width", "kd"]
    assert main[1][1].startswith("★ +") or main[1][1].startswith("+")
    assert "Hidden width 16: only kd was trained; there is nothing to compare." in section_text(html, "objectives")


def test_an_objective_missing_at_one_size_reads_not_trained(tmp_path):
    inputs = report_inputs(tmp_path)
    df = synthetic_results(EVIL)
    df = df[~((df["objective"] == "nkd") & (df["student_size"] == 64))]
    df.to_csv(inputs["results"], index=False)
    html = build(inputs, tmp_path / "out")
    main, _ = tables(html, "objectives")
    assert main[0][-1] == "nkd" and main[2][-1] == "not trained" and main[1][-1] != "not trained"
