"""The transfer stage's builders: one function per kind of transfer set (the table in
stages/transfer.py's docstring). Each takes the stage's state (transfer._Stage: the data,
the cached reference teacher, the teacher factory, the teachers trained so far) and the
parsed variant, and returns the set's arrays, its protocol sentence and what the record
says about it. Kept apart from transfer.py so that each module reads in one sitting; only
the transfer stage imports it.
"""

from __future__ import annotations

import copy

import numpy as np

from distillstudy import grid
from distillstudy.analysis import metrics
from distillstudy.engine import augment, datasets, seeds
from distillstudy.engine.teachers import stratified_folds, stratified_subset


def require_params(params: dict, names: list[str], variant: str) -> None:
    missing = [n for n in names if params.get(n) is None]
    if missing:
        raise ValueError(f"variant {variant!r} needs the transfer knob(s) "
                         f"{', '.join('--' + n.replace('_', '-') for n in missing)}")


def level_seed(stage: _Stage, coordinate: str, level) -> int:
    return seeds.derive_seed(stage.global_seed, stage.name, coordinate, grid.format_number(level))


def whole_train(stage: _Stage) -> dict:
    n = stage.n_train
    return {"x": stage.arrays["x_train"], "y": stage.arrays["y_train"], "source": np.arange(n, dtype=np.int64)}


def _in_sample(stage: _Stage, parsed, params) -> dict:
    seed = seeds.teacher_seed(stage.global_seed, stage.name)
    if stage.kind in grid.FIXED_TEACHER_KINDS:
        protocol = ("the in-sample logits on the training points of the convex teacher fitted to convergence "
                    "on all of them (the same fit as the reference teacher: a convex fit has no early stopping)")
    else:
        protocol = (f"the in-sample logits on the training points of a teacher of the reference architecture "
                    f"and seed trained on all of them for {stage.hyper['max_epochs']} epochs without early "
                    "stopping (last epoch kept)")
    _, logits = stage.train("in_sample", seed, select="last")
    return {**whole_train(stage), "logits": logits["train"], "logits_val": logits["val"],
            "logits_test": logits["test"], "protocol": protocol,
            "test_time_teacher": "the in-sample teacher itself"}


def _cross_fitted(stage: _Stage, parsed, params) -> dict:
    require_params(params, ["folds"], "transfer-cross_fitted")
    k = int(params["folds"])
    y = stage.arrays["y_train"]
    fold_seed = seeds.derive_seed(stage.global_seed, stage.name, "folds")
    fold = stratified_folds(y, k, fold_seed)
    train_mask = np.stack([fold != j for j in range(k)])
    logits = np.empty((stage.n_train, stage.info["n_classes"]), dtype=np.float32)
    val, test = [], []
    fold_seeds = [seeds.derive_seed(stage.global_seed, stage.name, "cross_fitted", j) for j in range(k)]
    first = len(stage.teachers)
    trained = stage.train_stack([f"fold{j}" for j in range(k)], fold_seeds,
                                [np.flatnonzero(train_mask[j]) for j in range(k)])
    for j, out in enumerate(trained):
        held_out = fold == j
        logits[held_out] = out["train"][held_out]  # predicted on all of x_train, rows of fold j kept
        stage.teachers[first + j]["fold"] = j
        stage.teachers[first + j]["held_out_accuracy"] = metrics.accuracy(out["train"][held_out], y[held_out])
        val.append(out["val"])
        test.append(out["test"])
    what = "convex teachers" if stage.kind in grid.FIXED_TEACHER_KINDS else "early-stopped teachers"
    return {**whole_train(stage), "logits": logits, "logits_val": metrics.log_mean_prob(val),
            "logits_test": metrics.log_mean_prob(test), "fold": fold, "train_mask": train_mask,
            "protocol": (f"cross-fitted logits: the training points are split into {k} stratified folds and "
                         f"each point's logits come from the one of {k} {what} that was trained on the other "
                         "folds, never from one that saw it"),
            "test_time_teacher": f"log of the mean probability of the {k} fold teachers",
            "folds": {"k": k, "seed": fold_seed, "seed_coordinates": "derive_seed(global_seed, dataset, 'folds')",
                      "sizes": np.bincount(fold, minlength=k).tolist(),
                      "method": "per class, shuffled and dealt round-robin (stratified)"}}


def _oracle(stage: _Stage, parsed, params) -> dict:
    """The oracle teacher (sine only): the true log-probabilities log(1 - p), log p with
    p = 0.4 sin x + 0.5, on every split: the most any teacher can give a student."""
    if stage.kind not in grid.PROTOCOL_KINDS["oracle"]:
        raise ValueError(f"transfer[{stage.name}]: the oracle teacher needs the true p(y | x), which only "
                         f"{', '.join(grid.PROTOCOL_KINDS['oracle'])} data have (kind {stage.kind!r})")
    logits = {s: datasets.sine_oracle_logits(stage.arrays[f"x_{s}"]).astype(np.float32) for s in grid.SPLITS}
    stage.teachers.append({"name": "oracle", "seed": None, "architecture": "true log p(y | x) = log(0.4 sin x + 0.5)",
                           "n_params": 0, "trained_here": False, "metrics": stage.member_metrics(logits)})
    return {**whole_train(stage), "logits": logits["train"], "logits_val": logits["val"],
            "logits_test": logits["test"], "protocol": "the true conditional distribution's log-probabilities "
            "on the training points (the oracle teacher)", "test_time_teacher": "the oracle itself"}


def _augmented(stage: _Stage, parsed, params) -> dict:
    needed = ["copies", "noise"] + {"mnist1d": ["shift"], "digits": ["pixel_shift"]}.get(stage.kind, [])
    require_params(params, needed, "transfer-augmented")
    model = stage.load_reference()
    x, source, settings = augment.transfer_copies(
        stage.kind, stage.arrays["x_train"], copies=int(params["copies"]), global_seed=stage.global_seed,
        dataset=stage.name, noise=float(params["noise"]), shift=int(params["shift"] or 0),
        pixel_shift=float(params["pixel_shift"] or 0.0))
    n = stage.n_train
    logits = stage.factory.label_blocks(model, x, n)  # block 0 (the training points) = logits_train
    y = stage.arrays["y_train"][source]
    # How label-preserving the copies are in the teacher's eyes: block 0 = the original points.
    blocks = [slice(i, i + n) for i in range(0, len(x), n)]
    settings["teacher_accuracy_per_block"] = [metrics.accuracy(logits[b], y[b]) for b in blocks]
    settings["teacher_mean_max_prob_per_block"] = [metrics.mean_max_prob(logits[b]) for b in blocks]
    return {"x": x, "y": y, "source": source, "logits": logits,
            "logits_val": stage.cached["logits_val"], "logits_test": stage.cached["logits_test"],
            "protocol": (f"the reference (early-stopped) teacher's logits, computed here, on the training points "
                         f"followed by {settings['copies']} label-preserving augmented copies of each "
                         f"({settings['method']})"),
            "test_time_teacher": "the reference teacher (its cached logits)",
            "augmentation": settings}


def _width(stage: _Stage, parsed, params) -> dict:
    w = float(parsed["value"])
    if not w > 0:
        raise ValueError(f"variant width-{parsed['level']}: the width multiplier must be > 0")
    level = grid.format_number(w)
    seed = level_seed(stage, "width", w)
    _, logits = stage.train(f"width-{level}", seed, width=w)
    t = stage.teachers[-1]
    size = f"{t['cnn_channels']} channels" if t["cnn_channels"] is not None else f"width {t['mlp_width']}"
    return {**whole_train(stage), "logits": logits["train"], "logits_val": logits["val"],
            "logits_test": logits["test"],
            "protocol": (f"the in-sample logits on the training points of a teacher of the reference kind "
                         f"{level} times as wide ({size}), own seed, early-stopped on validation NLL"),
            "test_time_teacher": f"the width-{level} teacher"}


def _ensemble(stage: _Stage, parsed, params) -> dict:
    m = int(parsed["value"])
    if m < 1:
        raise ValueError(f"variant ensemble-{parsed['level']}: an ensemble needs at least one member")
    reference = stage.load_reference()
    stage.teachers[-1]["name"] = "member0"
    stage.states["member0"] = copy.deepcopy(reference.state_dict())
    per_split = {s: [stage.cached[f"logits_{s}"]] for s in ("train", "val", "test")}
    if m > 1:
        member_seeds = [seeds.derive_seed(stage.global_seed, stage.name, "ensemble", j) for j in range(1, m)]
        for out in stage.train_stack([f"member{j}" for j in range(1, m)], member_seeds, [None] * (m - 1)):
            for s in per_split:
                per_split[s].append(out[s])
    combined = {s: metrics.log_mean_prob(per_split[s]) for s in per_split}
    return {**whole_train(stage), "logits": combined["train"], "logits_val": combined["val"],
            "logits_test": combined["test"],
            "protocol": (f"log of the mean probability, on the training points, of {m} teachers of the reference "
                         f"kind: the reference teacher and {m - 1} more with their own seeds, each early-stopped "
                         "on validation NLL"),
            "test_time_teacher": f"log of the mean probability of the {m} members",
            "ensemble": {"members": m,
                         "member_test_accuracy": [t["metrics"]["test"]["accuracy"] for t in stage.teachers],
                         "ensemble_test_accuracy": metrics.accuracy(combined["test"], stage.arrays["y_test"]),
                         "ensemble_val_accuracy": metrics.accuracy(combined["val"], stage.arrays["y_val"])}}


def _labels(stage: _Stage, parsed, params) -> dict:
    f = float(parsed["value"])
    level = grid.format_number(f)
    seed = level_seed(stage, "labels", f)
    subset = stratified_subset(stage.arrays["y_train"], f, seed)
    stage.load_reference()
    cached = stage.cached
    y = stage.arrays["y_train"][subset]
    return {"x": stage.arrays["x_train"][subset], "y": y, "source": subset,
            "logits": cached["logits_train"][subset], "logits_val": cached["logits_val"],
            "logits_test": cached["logits_test"],
            "protocol": (f"the reference teacher's cached logits on a class-stratified {level} share of the "
                         f"training points ({len(subset)} of {stage.n_train}); the teacher saw every label"),
            "test_time_teacher": "the reference teacher (its cached logits)",
            "subset": {"fraction": f, "n": int(len(subset)), "seed": seed,
                       "seed_coordinates": "derive_seed(global_seed, dataset, 'labels', level)",
                       "class_counts": np.bincount(y, minlength=stage.info["n_classes"]).tolist()}}


def bootstrap_points(n: int, seed: int) -> np.ndarray:
    """A bootstrap resample of n training points: n indices drawn uniformly with
    replacement (Efron 1979), in draw order, from Generator(PCG64(seed))."""
    return np.random.default_rng(seed).integers(0, n, size=n).astype(np.int64)


def resample(stage, parsed, params) -> dict:
    """Replicate r of the variance design: the training split resampled with replacement,
    and the teacher REFITTED on the resample (early-stopped on the same validation split):
    the seed's caveat is that a teacher adds variance of its own, so the distilled students'
    variance across training sets must include their teacher's."""
    r = int(parsed["value"])
    if r < 1:
        raise ValueError(f"variant resample-{parsed['level']}: resamples are numbered from 1")
    seed = level_seed(stage, "resample", r)
    points = bootstrap_points(stage.n_train, seed)
    _, logits = stage.train(f"resample-{r}", seeds.derive_seed(seed, "teacher"), points=points)
    distinct = int(len(np.unique(points)))
    return {"x": stage.arrays["x_train"][points], "y": stage.arrays["y_train"][points], "source": points,
            "logits": logits["train"][points], "logits_val": logits["val"], "logits_test": logits["test"],
            "protocol": (f"bootstrap resample {r} of the training points ({distinct} distinct of {stage.n_train}, "
                         "drawn with replacement), with the in-sample logits of a teacher of the reference kind "
                         "refitted on it (own seed, early-stopped on validation)"),
            "test_time_teacher": f"the resample-{r} teacher",
            "subset": {"resample": r, "n": int(len(points)), "distinct": distinct, "seed": seed,
                       "seed_coordinates": "derive_seed(global_seed, dataset, 'resample', r); the teacher's: "
                                           "derive_seed(that seed, 'teacher')",
                       "method": "uniform with replacement (bootstrap)"}}


def teacher_spec(stage) -> dict:
    """How a distill job rebuilds the reference teacher's architecture (engine/consistent.py's
    reference_teacher; the born-again students): kind, sizes, knobs, your factory, seed."""
    return {"kind": stage.kind, "n_features": stage.info["n_features"], "n_classes": stage.info["n_classes"],
            "input_shape": list(stage.info["input_shape"]), "hyper": stage.hyper, "factory": stage.factory_spec,
            "seed": seeds.teacher_seed(stage.global_seed, stage.name)}


def generation(stage, parsed, params) -> dict:
    """Born-again generation 1's set (Furlanello et al. 2018): the training points with the
    reference teacher's cached logits, and how to build the teacher's architecture, which
    every generation's students have. Generation k > 1 reads this set too, with generation
    k - 1's cell for its targets (replicate by replicate, in its distill jobs): a transfer
    job cannot wait on a distill job (DVC runs the stages in order)."""
    if int(parsed["value"]) != 1:
        raise ValueError(f"variant generation-{parsed['level']}: only generation 1 has a transfer set; later "
                         "generations read it and the previous generation's cell")
    stage.load_reference()
    return {**whole_train(stage), "generation": {"teacher": teacher_spec(stage)},
            "logits": stage.cached["logits_train"], "logits_val": stage.cached["logits_val"],
            "logits_test": stage.cached["logits_test"], "test_time_teacher": "the reference teacher",
            "protocol": "born-again generation 1: the reference teacher's cached logits on the training points"}


def consistent(stage, parsed, params) -> dict:
    """Consistent teaching (Beyer et al. 2022): the set is the training split with the
    reference teacher's clean-input logits (what the test-time teacher and the designs table
    read); the students' distill jobs draw a fresh view of every point each epoch and run the
    reference teacher on it (engine/consistent.py). The record says how to rebuild that
    teacher and draw the views."""
    needed = ["noise"] + {"mnist1d": ["shift"], "digits": ["pixel_shift"]}.get(stage.kind, [])
    require_params(params, needed, f"transfer-{parsed['level']}")
    stage.load_reference()
    views = {"kind": stage.kind, "noise": float(params["noise"]), "shift": int(params["shift"] or 0),
             "pixel_shift": float(params["pixel_shift"] or 0.0),
             "seed": seeds.derive_seed(stage.global_seed, stage.name, "consistent"),
             "seed_coordinates": "derive_seed(global_seed, dataset, 'consistent'); epoch e's views: "
                                 "derive_seed(that seed, 'consistent', e)",
             "method": augment.describe(stage.kind, noise=float(params["noise"]), shift=int(params["shift"] or 0),
                                        pixel_shift=float(params["pixel_shift"] or 0.0)),
             "teacher": teacher_spec(stage)}
    how_long = "for distill.epochs epochs" if parsed["level"] == "consistent" else \
        "for transfer.patient_factor x distill.epochs epochs (patient)"
    return {**whole_train(stage), "logits": stage.cached["logits_train"], "logits_val": stage.cached["logits_val"],
            "logits_test": stage.cached["logits_test"], "consistent": views,
            "protocol": (f"consistent teaching {how_long}: every epoch a fresh label-preserving view of each "
                         f"training point ({views['method']}), with the reference teacher's logits on exactly "
                         "that view, computed during training"),
            "test_time_teacher": "the reference teacher (its cached logits)"}


def builder(name: str, parsed: dict, kind: str):
    """The function that builds variant `name`'s transfer set (refusing the reference and
    variants that have none)."""
    axis = parsed["axis"]
    if axis is None or name == grid.variant_name("transfer", grid.AXES["transfer"][1]):
        raise ValueError(f"variant {name!r} is the reference: its transfer set is the teacher stage's "
                         "logits, there is nothing to build")
    if axis not in grid.NEEDS_TRANSFER_SET:
        raise ValueError(f"variant {name!r} ({axis} axis) uses the reference transfer set; it has no "
                         "transfer stage")
    if not grid.applies(axis, kind):
        raise ValueError(f"variant {name!r} does not apply to dataset kind {kind!r}: its teacher is a "
                         f"convex fit with no width and no seed dependence ({axis} axis)")
    if axis == "transfer":
        return {"in_sample": _in_sample, "cross_fitted": _cross_fitted, "augmented": _augmented,
                "oracle": _oracle, "consistent": consistent, "patient": consistent}[parsed["value"]]
    return {"teacher_width": _width, "ensemble": _ensemble, "label_fraction": _labels,
            grid.RESAMPLES: resample, grid.GENERATIONS: generation}[axis]
