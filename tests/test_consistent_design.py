"""Consistent teaching as a study design (issue "Fair baselines", item 5): the transfer
protocols `consistent` and `patient`, their sets, and distill jobs that run the reference
teacher on a fresh view of every point each epoch (the engine: tests/test_consistent.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillstudy import grid
from distillstudy.artifacts import load_npz, save_npz
from distillstudy.errors import ParamsError
from distillstudy.stages import distill, transfer
from synthetic import sine_with_teacher

KNOBS = dict(max_epochs=4, patience=2, batch_size=16, lr=0.01, weight_decay=0.0, cnn_channels=4, mlp_width=8,
             dropout=0.0)


def test_the_protocols_cells_epochs_and_settings():
    temps = ["kd_T1_mix0.9", "kd_T4_mix0.9"]
    for level in grid.CONSISTENT:
        variant = grid.variant_name("transfer", level)
        assert grid.variant_cells(variant, temps) == [grid.CONTROL, *temps]  # control on the same views
        keys = grid.variant_settings(variant)
        assert "transfer.noise" in keys and "transfer.shift" in keys and "transfer.copies" not in keys
        assert "teacher.max_epochs" not in keys  # the reference teacher is run, not retrained
    assert grid.variant_epochs("transfer-consistent", 40, 4) == 40
    assert grid.variant_epochs("transfer-patient", 40, 4) == 160
    assert grid.variant_cells("transfer-in_sample", temps) == temps


@pytest.fixture
def sine_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sine_with_teacher(KNOBS)
    transfer.run(data="s.npz", meta="s.json", teacher_model="t.pt", teacher_logits="t.npz", dataset="sine",
                 variant="transfer-consistent", global_seed=3, folds=None, copies=None, noise=0.3, shift=None,
                 pixel_shift=None, out_set="c.npz", out_model="c.pt", out_meta="c.json",
                 **{k: KNOBS[k] if k in ("cnn_channels", "mlp_width", "dropout") else None for k in KNOBS})
    return tmp_path


def _distill(cell: str, out: str, transfer_set: str = "c.npz", **extra) -> dict:
    return distill.run(data="s.npz", dataset="sine", size=8, cell=cell, n_seeds=2, global_seed=3, epochs=3,
                       batch_size=16, lr=0.01, weight_decay=0.0, out_model=f"{out}.pt", out_logits=f"{out}.npz",
                       transfer=transfer_set, variant="transfer-consistent", **extra)


def test_the_set_says_how_to_draw_the_views_and_rebuild_the_teacher(sine_run):
    arrays, tset, cached = load_npz("s.npz"), load_npz("c.npz"), load_npz("t.npz")
    np.testing.assert_array_equal(tset["x"], arrays["x_train"])
    np.testing.assert_array_equal(tset["logits"], cached["logits_train"])  # the clean inputs' logits
    views = json.loads(str(tset["record"]))["consistent"]
    assert views["noise"] == 0.3 and views["teacher"]["kind"] == "sine" and views["teacher"]["factory"] is None


def test_a_consistent_cell_trains_on_fresh_views_with_the_teacher_on_each(sine_run):
    record = _distill("kd_T4_mix0.9", "a", teacher_model="t.pt")
    assert record["consistent"]["epochs_drawn"] == 3 and record["consistent"]["protocol"] == "consistent"
    assert not any(k.endswith("seconds") for k in record["consistent"])  # reruns write the same bytes
    first = (sine_run / "a.npz").read_bytes()
    _distill("kd_T4_mix0.9", "a", teacher_model="t.pt")
    assert (sine_run / "a.npz").read_bytes() == first
    # The same set without its views: the clean inputs and their cached logits, every epoch.
    tset = load_npz("c.npz")
    record_free = {**json.loads(str(tset["record"]))}
    record_free.pop("consistent")
    save_npz("plain.npz", {**tset, "record": np.array(json.dumps(record_free))})
    _distill("kd_T4_mix0.9", "b", transfer_set="plain.npz")
    assert not np.array_equal(load_npz("a.npz")["logits_test"], load_npz("b.npz")["logits_test"])
    _distill("control", "ctrl", teacher_model="t.pt")  # the hard-label control meets the views too
    assert json.loads(str(load_npz("ctrl.npz")["record"]))["consistent"]["epochs_drawn"] == 3


def test_a_consistent_cell_without_the_teacher_s_weights_is_refused(sine_run):
    with pytest.raises(ParamsError, match="needs the reference teacher's weights"):
        _distill("kd_T4_mix0.9", "x")
