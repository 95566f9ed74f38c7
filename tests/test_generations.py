"""Self-distillation and born-again generations (issue "Fair baselines", item 4): students of
the teacher's own architecture, generation k + 1 taught replicate by replicate by generation k,
and whether any beats its teacher, with a CI over replicates."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from synthetic import sine_with_teacher
from conftest import make_workspace, run, tiny_params
from distillstudy import grid
from distillstudy.analysis import generations
from distillstudy.artifacts import load_npz
from distillstudy.engine.cell_loss import objective_fn
from distillstudy.engine.families import mlp
from distillstudy.engine.generic import GenericStack, train_generic
from distillstudy.errors import ParamsError
from distillstudy.params import check_params
from distillstudy.render import generations as render_generations
from distillstudy.stages import distill, transfer

KNOBS = dict(max_epochs=4, patience=2, batch_size=16, lr=0.01, weight_decay=0.0, cnn_channels=4, mlp_width=8,
             dropout=0.0)


def test_per_replicate_teacher_logits_equal_shared_ones_when_they_are_the_same():
    """The generic engine's (M, n, C) targets: identical blocks give the bits of one (n, C)."""
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(40, 5, generator=g), torch.randn(40, 3, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    kd = objective_fn("kd", 0.9, {"temperature": 2.0})

    def run(targets):
        stack = GenericStack(lambda: mlp((5,), 3, 8), [1, 2], x, "per-member")
        history = train_generic(stack, x, y, targets, kd, epochs=3, batch_size=16, lr=0.01, weight_decay=0.0,
                                run_name="per-member")
        return history, {k: v.detach().clone() for k, v in stack.params.items()}
    shared, per = run(t), run(torch.stack([t, t]))
    assert shared[0] == per[0]
    assert all(torch.equal(shared[1][k], per[1][k]) for k in shared[1])
    other = run(torch.stack([t, torch.randn(40, 3, generator=g)]))  # member 1's own teacher
    first = next(iter(shared[1]))
    assert torch.equal(other[1][first][0], shared[1][first][0])  # member 0 unchanged
    assert not torch.equal(other[1][first][1], shared[1][first][1])


def test_generations_are_variants_with_the_teacher_s_own_students():
    params = tiny_params()
    params["designs"].update(generations=3, generation_datasets=["digits"])
    names = grid.dataset_variants(params, {"name": "digits", "kind": "digits"})
    assert [v for v in names if v.startswith("generation")] == ["generation-1", "generation-2", "generation-3"]
    students, cells = grid.generation_plan(params)
    assert students == [grid.SELF_STUDENT] and cells == ["kd_T1_mix1", "kd_T1_mix0.9"]
    check_params(params)
    params["designs"]["generation_datasets"] = ["sine"]  # not a design dataset of the tiny study: skipped
    check_params(params)
    assert not [v for v in grid.dataset_variants(params, {"name": "sine", "kind": "sine"}) if v.startswith("gen")]
    assert not [v for v in grid.dataset_variants(params, {"name": "digits", "kind": "digits"}) if v.startswith("gen")]
    # Names outside designs.datasets are skipped, not refused: a configfile that narrows
    # prepare.datasets or designs.datasets (Snakemake merges it over params.yaml) needs no edit here.


@pytest.fixture
def sine_chain(tmp_path, monkeypatch):
    """Generation 1 and 2 on sine (the convex teacher's architecture), by the stages themselves."""
    monkeypatch.chdir(tmp_path)
    sine_with_teacher(KNOBS)
    arch = {k: KNOBS[k] if k in ("cnn_channels", "mlp_width", "dropout") else None for k in KNOBS}
    common = dict(data="s.npz", meta="s.json", teacher_model="t.pt", teacher_logits="t.npz", dataset="sine",
                  global_seed=3, folds=None, copies=None, noise=None, shift=None, pixel_shift=None, **arch)
    cell = dict(data="s.npz", dataset="sine", size=1, n_seeds=3, global_seed=3, epochs=5, batch_size=16, lr=0.05,
                weight_decay=0.0, family="teacher")
    transfer.run(**common, variant="generation-1", out_set="g1.npz", out_model="g1.pt", out_meta="g1.json")
    for k in (1, 2):
        for alpha in ("1", "0.9"):
            distill.run(**cell, cell=f"kd_T1_mix{alpha}", transfer="g1.npz", variant=f"generation-{k}",
                        previous_generation=None if k == 1 else "g1_mix1.npz",
                        out_model=f"g{k}_mix{alpha}.pt", out_logits=f"g{k}_mix{alpha}.npz")
    return tmp_path


def test_generation_two_learns_from_generation_one_replicate_by_replicate(sine_chain):
    r1, r2 = (json.loads(str(load_npz(f"g{k}_mix1.npz")["record"])) for k in (1, 2))
    assert r2["generation"]["previous"] == "g1_mix1.npz" and r2["generation"]["k"] == 2
    assert r1["architecture"] == r2["architecture"] and r1["family"] == "teacher"
    assert r1["n_params"] == json.loads((sine_chain / "t.json").read_text())["n_params"]  # the teacher's class
    assert r1["seeds"] != r2["seeds"] and len(r2["seeds"]) == 3  # fresh initial weights per generation
    assert r2["generation"]["previous_seeds"] == r1["seeds"]
    first = (sine_chain / "g2_mix1.npz").read_bytes()
    distill.run(data="s.npz", dataset="sine", size=1, n_seeds=3, global_seed=3, epochs=5, batch_size=16, lr=0.05,
                weight_decay=0.0, family="teacher", cell="kd_T1_mix1", transfer="g1.npz", variant="generation-2",
                previous_generation="g1_mix1.npz", out_model="again.pt", out_logits="again.npz")
    assert (sine_chain / "again.npz").read_bytes() == first
    # replicate r of generation 2 is generation 1's replicate r, distilled: a convex fit at alpha = 1
    # reproduces its own teacher
    g1, g2 = load_npz("g1_mix1.npz"), load_npz("g2_mix1.npz")
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(g2["logits_test"]).double(), -1).numpy(),
                               torch.softmax(torch.from_numpy(g1["logits_test"]).double(), -1).numpy(), atol=1e-4)


def test_a_globally_optimised_student_of_a_convex_teacher_s_class_reproduces_it(sine_chain):
    """The seed's argument, made concrete: at alpha = 1, T = 1 the loss is the cross-entropy to
    the teacher's probabilities, minimised within the class by the teacher itself."""
    teacher_p = torch.softmax(torch.from_numpy(load_npz("t.npz")["logits_test"]).double(), 1).numpy()
    for logits in load_npz("g1_mix1.npz")["logits_test"]:
        student_p = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
        np.testing.assert_allclose(student_p, teacher_p, atol=1e-4)
    record = json.loads(str(load_npz("g1_mix1.npz")["record"]))
    assert "L-BFGS" in record["runtime"]["engine"]


def test_a_later_generation_needs_the_previous_one(sine_chain):
    with pytest.raises(ParamsError, match="generation k > 1 also needs generation k - 1's cell"):
        distill.run(data="s.npz", dataset="sine", size=1, n_seeds=3, global_seed=3, epochs=2, batch_size=16,
                    lr=0.05, weight_decay=0.0, family="teacher", cell="kd_T1_mix1", transfer="g1.npz",
                    variant="generation-2", out_model="x.pt", out_logits="x.npz")


def test_the_teacher_family_trains_only_on_a_generation_s_set(sine_chain):
    with pytest.raises(ParamsError, match="trains on born-again generation 1's transfer set, and only it does"):
        distill.run(data="s.npz", dataset="sine", size=1, n_seeds=3, global_seed=3, epochs=2, batch_size=16,
                    lr=0.05, weight_decay=0.0, family="teacher", cell="kd_T1_mix1", teacher_logits="t.npz",
                    out_model="x.pt", out_logits="x.npz")


def test_the_table_pairs_each_student_with_its_own_teacher(sine_chain):
    arrays, reference = load_npz("s.npz"), load_npz("t.npz")
    cells = [str(sine_chain / f"g{k}_mix{a}.npz") for k in (1, 2) for a in ("1", "0.9")]
    frame = generations.build({"sine": (arrays, reference)}, [load_npz(c) for c in cells])
    wide = frame.pivot_table(index=["generation", "alpha", "replicate"], columns="metric", values="value")
    g1 = load_npz("g1_mix1.npz")["logits_test"]
    for r in range(3):  # generation 2's replicate r is compared with generation 1's replicate r
        expected = float((g1[r].argmax(1) == arrays["y_test"]).mean())
        assert wide.loc[(2, "1", r), "teacher_test_accuracy"] == pytest.approx(expected)
    reference_acc = float((reference["logits_test"].argmax(1) == arrays["y_test"]).mean())
    assert np.allclose(wide.xs(1, level="generation")["teacher_test_accuracy"], reference_acc)


def _summary_frame(gains: list[float]) -> pd.DataFrame:
    rows = []
    for r, gain in enumerate(gains):
        for alpha, val in (("1", 0.8), ("0.9", 0.7)):
            values = {"test_accuracy": 0.6 + gain, "teacher_test_accuracy": 0.6, "val_accuracy": val,
                      "reference_test_accuracy": 0.6, "test_nll": 1.0, "teacher_test_nll": 1.0}
            rows += [{"dataset": "toy", "generation": 1, "alpha": alpha, "replicate": r, "seed": r, "metric": m,
                      "value": v} for m, v in values.items()]
    return pd.DataFrame(rows, columns=generations.COLUMNS)


@pytest.mark.parametrize("gains, verdict", [([0.02, 0.03, 0.025], "beats its teacher"),
                                            ([-0.02, -0.03, -0.025], "falls short of its teacher"),
                                            ([0.02, -0.03, 0.01], "is not distinguishable from its teacher"),
                                            ([0.0, 0.0, 0.0], "matches its teacher exactly")])
def test_the_sentence_claims_no_more_than_the_interval(gains, verdict):
    summary = generations.summary(_summary_frame(gains))
    chosen = summary[summary["chosen"]]
    assert list(chosen["alpha"]) == ["1"]  # the higher validation accuracy
    text = " ".join(render_generations.sentences("toy", summary, "sine"))
    assert verdict in text and "convex fit" in text
    assert ("beat their teacher with confidence" in text) == (verdict == "beats its teacher")


@pytest.mark.slow
def test_the_transfer_and_distill_stages_run_alone_with_generations(tmp_path):
    """DVC runs `snakemake --until transfer` before any distill job: no transfer set may wait
    on a student (a later generation's targets are read by its distill jobs instead)."""
    params = tiny_params()
    params["prepare"]["datasets"] = [d for d in params["prepare"]["datasets"] if d["name"] == "digits"]
    params["designs"].update(transfer=[], epochs=[], teacher_width=[], ensemble=[], label_fraction=[],
                             resamples=0, generations=3)
    params["distill"].pop("tune")
    ws = make_workspace(tmp_path / "study", params)
    run(["snakemake", "-c2", "--until", "transfer"], ws)
    assert sorted(p.name for p in (ws / "models/transfer/digits").glob("*.npz")) == ["generation-1.npz"]
    assert not (ws / "models/students").exists()
    # ... and the distill stage's command (dvc.yaml) reaches the last generation: a chain of
    # distill jobs, which `snakemake --until distill` would never start
    command = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]["distill"]["cmd"]
    run(shlex.split(command) + ["-c2"], ws)
    cells = sorted(p.relative_to(ws / "models/students/digits").as_posix()
                   for p in (ws / "models/students/digits").glob("generation-*/*/*.logits.npz"))
    assert cells == [f"generation-{k}/teacher-1/kd_T1_mix{a}.logits.npz" for k in (1, 2, 3) for a in ("0.9", "1")]
    assert not (ws / "reports/results.csv").exists()
