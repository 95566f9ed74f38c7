"""The `transfer` stage: the transfer set that the students of ONE study-design variant
learn from (variants: grid.py), for one dataset. The teachers are built, trained and
loaded by engine/teachers.py; this module chooses their seeds, points and widths,
combines and scores them, and writes the outputs.

    variant               transfer points (x, y)          teacher targets (logits)
    transfer-in_sample    x_train, y_train                 a teacher of the reference architecture and
                                                           seed trained max_epochs epochs, last epoch
                                                           kept (no early stopping), on x_train
    transfer-cross_fitted x_train, y_train                 point i: fold teacher fold[i], early-stopped,
                                                           trained on the training points outside fold i
    transfer-augmented    x_train + `copies` augmented     the reference teacher's forward on every row
                          copies (augment.py), source y
    transfer-oracle       x_train, y_train (sine only)     the true log-probabilities log(1 - p), log p,
                                                           p = 0.4 sin x + 0.5: the oracle teacher
    width-<w>             x_train, y_train                 a reference-kind teacher w times as wide
                                                           (own seed, early-stopped), on x_train
    ensemble-<M>          x_train, y_train                 log of the mean probability of M teachers:
                                                           the reference + M-1 newly seeded ones
    labels-<f>            a class-stratified share f of    the reference teacher's logits_train rows
                          the training points              (copied from its logits file)

The K fold teachers (cross_fitted) and the M-1 new ensemble members train together, as one
stacked model per training-set size (TeacherFactory.train_stack, engine/stacked.py), each
early-stopped on its own validation NLL and equal to itself trained alone by that engine.
Their dropout masks come from each teacher's own torch.Generator, seeded
derive_seed(teacher seed, "dropout"), not from torch's global stream as in
train.train_teacher, and Adam runs through its fused kernel: their weights are therefore
not those train_teacher would give from the same seed. The in_sample and width teachers train alone with train_teacher (in_sample
must follow the reference teacher's trajectory); a convex (sine) teacher is fitted alone.

`logits_val` / `logits_test` hold the variant's TEST-TIME teacher: the mean probability
of the fold teachers (cross_fitted) or of the members (ensemble), the new teacher
(in_sample, width), the reference teacher's cached logits (augmented, labels).
Several teachers are always combined as log(mean_m softmax(logits_m)), in float64.

Every seed is derived with seeds.derive_seed from named coordinates and recorded:
    folds            (global_seed, dataset, "folds")
    fold teacher k   (global_seed, dataset, "cross_fitted", k)
    augmented copy c (global_seed, dataset, "augment", c)          (augment.copy_seed)
    width teacher    (global_seed, dataset, "width", level)
    ensemble member m(global_seed, dataset, "ensemble", m), m >= 1 (member 0 = the reference)
    label subset     (global_seed, dataset, "labels", level)
    dropout masks    (teacher seed, "dropout") of a fold teacher or new ensemble member
    in_sample        seeds.teacher_seed(global_seed, dataset): the reference teacher's own seed,
                     so its first epochs ARE the reference teacher's trajectory.
Levels are spelled by grid.format_number ("0.50" and "0.5" are one level).

Outputs (written atomically; byte-identical when run twice with the same inputs on the
same machine):
    out_set   npz: x float32 (n', d), y int64, source int64, logits float32 (n', C),
              logits_val, logits_test float32, fold int64 (-1 unless cross_fitted),
              train_mask bool (K, n_train) ((0, n_train) unless cross_fitted),
              record (a 0-d unicode array holding the record as sorted-key JSON, without `seconds`)
    out_model torch file {teacher name: state_dict} of every teacher trained here, and an ensemble's
              member0 (the reference); {} when none
    out_meta  the record as pretty JSON
"""

from __future__ import annotations

# First: imports torch with the garbage collector off (engine/runtime.py; 0.5 s a job).
from distillstudy.engine import runtime  # noqa: I001

import copy
import json
import time
from pathlib import Path

import numpy as np
from distillstudy.engine import augment, datasets, factories, seeds
from distillstudy.analysis import metrics
from distillstudy import grid
from distillstudy.artifacts import file_sha256, load_npz, save_npz, write_json
from distillstudy.engine.models import save_states
from distillstudy.engine.teachers import TeacherFactory, stratified_folds, stratified_subset


class _Stage:
    """One run's inputs, the engine's teacher factory, and what the variant has produced so
    far: the weights of every teacher trained here and every teacher's record (scored here)."""

    def __init__(self, *, arrays, info, global_seed, hyper, device, cached, teacher_model, factory=None):
        self.arrays, self.info, self.cached, self.teacher_model = arrays, info, cached, teacher_model
        self.kind, self.name = info["kind"], info["name"]
        self.global_seed = global_seed
        self.hyper = hyper  # the teacher section's knobs
        label = f"transfer[{self.name}]"
        builder = None if factory is None else factories.teacher_builder(
            factory, info["input_shape"], info["n_classes"], arrays["mean"], arrays["std"], f"{label} {factory}")
        self.factory = TeacherFactory(kind=self.kind, n_features=info["n_features"], n_classes=info["n_classes"],
                                      arrays=arrays, hyper=hyper, device=device, label=label, builder=builder,
                                      architecture=factory)
        self.n_train = self.factory.n_train
        self.states: dict[str, dict] = {}  # every teacher trained here
        self.teachers: list[dict] = []  # their records (and the reference's, where used)
        self.reference_used = False

    def member_metrics(self, logits: dict[str, np.ndarray]) -> dict:
        return {s: {"accuracy": metrics.accuracy(logits[s], self.arrays[f"y_{s}"]),
                    "nll": metrics.nll(logits[s], self.arrays[f"y_{s}"])} for s in ("val", "test")}

    def _keep(self, name: str, seed: int, model, logits: dict, record: dict, took: str) -> None:
        """A trained teacher's weights kept, its record scored, one line printed."""
        self.states[name] = copy.deepcopy(model.state_dict())
        self.teachers.append({**record, "metrics": self.member_metrics(logits)})
        fit = record["fit"]
        print(f"transfer[{self.name}]: teacher {name} (seed {seed}): {fit['selection']}, epoch "
              f"{fit['best_epoch']} of {fit['epochs_run']}, test accuracy "
              f"{self.teachers[-1]['metrics']['test']['accuracy']:.4f}, {took}")

    def train(self, name: str, seed: int, **how):
        """factory.train (points, width, select), its weights kept and its record scored."""
        started = time.perf_counter()
        model, logits, record = self.factory.train(name, seed, **how)
        self._keep(name, seed, model, logits, record, f"{time.perf_counter() - started:.1f} s")
        return model, logits

    def train_stack(self, names: list[str], teacher_seeds: list[int], points_list: list) -> list[dict[str, np.ndarray]]:
        """factory.train_stack (one stacked model per training-set size), every teacher's weights
        kept and its record scored; returns each one's logits on every split, in order."""
        started = time.perf_counter()
        trained = self.factory.train_stack(names, teacher_seeds, points_list)
        took = f"{time.perf_counter() - started:.1f} s for all {len(names)}"
        for name, seed, (model, logits, record) in zip(names, teacher_seeds, trained):
            self._keep(name, seed, model, logits, record, took)
        return [logits for _, logits, _ in trained]

    def load_reference(self):
        """The reference teacher (its seed, its weights), checked against its cached logits."""
        model, record = self.factory.load_reference(self.teacher_model, seeds.teacher_seed(self.global_seed, self.name),
                                                    self.cached["logits_val"])
        self.teachers.append({**record, "metrics": self.member_metrics(
            {"val": self.cached["logits_val"], "test": self.cached["logits_test"]})})
        self.reference_used = True
        return model


def _maybe(cast, value):
    return None if value is None else cast(value)


def _require_params(params: dict, names: list[str], variant: str) -> None:
    missing = [n for n in names if params.get(n) is None]
    if missing:
        raise ValueError(f"variant {variant!r} needs the transfer knob(s) "
                         f"{', '.join('--' + n.replace('_', '-') for n in missing)}")


def _level_seed(stage: _Stage, coordinate: str, level) -> int:
    return seeds.derive_seed(stage.global_seed, stage.name, coordinate, grid.format_number(level))


def _whole_train(stage: _Stage) -> dict:
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
    return {**_whole_train(stage), "logits": logits["train"], "logits_val": logits["val"],
            "logits_test": logits["test"], "protocol": protocol,
            "test_time_teacher": "the in-sample teacher itself"}


def _cross_fitted(stage: _Stage, parsed, params) -> dict:
    _require_params(params, ["folds"], "transfer-cross_fitted")
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
    return {**_whole_train(stage), "logits": logits, "logits_val": metrics.log_mean_prob(val),
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
    return {**_whole_train(stage), "logits": logits["train"], "logits_val": logits["val"],
            "logits_test": logits["test"], "protocol": "the true conditional distribution's log-probabilities "
            "on the training points (the oracle teacher)", "test_time_teacher": "the oracle itself"}


def _augmented(stage: _Stage, parsed, params) -> dict:
    needed = ["copies", "noise"] + {"mnist1d": ["shift"], "digits": ["pixel_shift"]}.get(stage.kind, [])
    _require_params(params, needed, "transfer-augmented")
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
    seed = _level_seed(stage, "width", w)
    _, logits = stage.train(f"width-{level}", seed, width=w)
    t = stage.teachers[-1]
    size = f"{t['cnn_channels']} channels" if t["cnn_channels"] is not None else f"width {t['mlp_width']}"
    return {**_whole_train(stage), "logits": logits["train"], "logits_val": logits["val"],
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
    return {**_whole_train(stage), "logits": combined["train"], "logits_val": combined["val"],
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
    seed = _level_seed(stage, "labels", f)
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


def _builder(name: str, parsed: dict, kind: str):
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
                "oracle": _oracle}[parsed["value"]]
    return {"teacher_width": _width, "ensemble": _ensemble, "label_fraction": _labels}[axis]


def run(*, data: str, meta: str, teacher_model: str, teacher_logits: str, dataset: str, variant: str,
        global_seed: int, max_epochs: int, patience: int, batch_size: int, lr: float, weight_decay: float,
        cnn_channels: int, mlp_width: int, dropout: float,
        folds: int, copies: int, noise: float, shift: int, pixel_shift: float,
        out_set: str, out_model: str, out_meta: str, threads: int = 1, factory: str | None = None) -> dict:
    """Build one variant's transfer set (see the module docstring) and write the three outputs.
    `factory`: the dataset's teacher is your module (prepare.datasets[*].teacher.factory,
    trained here by the teacher stage); its teachers here are built by it too."""
    started = time.perf_counter()
    info = json.loads(Path(meta).read_text())
    if info["name"] != dataset:
        raise ValueError(f"--dataset {dataset!r} does not match {meta} (dataset {info['name']!r})")
    try:
        parsed = grid.parse_variant(variant)
    except ValueError as exc:  # e.g. 'width-abc': float() names the level, not the variant
        raise ValueError(str(exc) if repr(variant) in str(exc) else f"variant {variant!r}: {exc}") from None
    if "teacher" in info:
        raise ValueError(f"transfer[{dataset}]: the teacher is offline logits ({info['teacher']['path']}); the "
                         "study designs retrain or re-run the teacher, so they do not apply to it")
    builder = _builder(variant, parsed, info["kind"])
    if factory is not None and parsed["axis"] == "teacher_width":
        raise ValueError(f"variant {variant!r}: your teacher factory {factory} has no width knob")
    settings = runtime.configure(threads)
    arrays = load_npz(data)
    cached = load_npz(teacher_logits)
    # Knobs a variant does not read may be None (the CLI passes only those it reads).
    hyper = {"max_epochs": _maybe(int, max_epochs), "patience": _maybe(int, patience),
             "batch_size": _maybe(int, batch_size), "lr": _maybe(float, lr),
             "weight_decay": _maybe(float, weight_decay), "cnn_channels": _maybe(int, cnn_channels),
             "mlp_width": _maybe(int, mlp_width), "dropout": _maybe(float, dropout)}
    params = {"folds": _maybe(int, folds), "copies": _maybe(int, copies), "noise": _maybe(float, noise),
              "shift": _maybe(int, shift), "pixel_shift": _maybe(float, pixel_shift)}
    stage = _Stage(arrays=arrays, info=info, global_seed=int(global_seed), hyper=hyper, device=settings["device"],
                   cached=cached, teacher_model=teacher_model, factory=factory)
    built = builder(stage, parsed, params)

    n_train = stage.n_train
    fold = built.get("fold", np.full(len(built["source"]), -1, dtype=np.int64))
    train_mask = built.get("train_mask", np.zeros((0, n_train), dtype=bool))
    types = {"x": np.float32, "y": np.int64, "source": np.int64, "logits": np.float32, "logits_val": np.float32,
             "logits_test": np.float32}
    out = {key: np.ascontiguousarray(built[key], dtype=dtype) for key, dtype in types.items()}
    out.update(fold=np.ascontiguousarray(fold, dtype=np.int64), train_mask=np.ascontiguousarray(train_mask, dtype=bool))
    record = {
        "dataset": dataset, "variant": variant, "axis": parsed["axis"], "level": parsed["level"], "kind": info["kind"],
        "protocol": built["protocol"], "test_time_teacher": built["test_time_teacher"], "teachers": stage.teachers,
        "teacher_hyperparameters": {k: v for k, v in hyper.items() if v is not None},
        "n_transfer": int(len(out["y"])),
        "n_train": n_train,
        "global_seed": int(global_seed),
        "reference_teacher": {"model_sha256": file_sha256(teacher_model),
                              "logits_sha256": file_sha256(teacher_logits),
                              "seed": seeds.teacher_seed(int(global_seed), dataset),
                              "used": stage.reference_used},
        "data_sha256": info["sha256"],
        "metrics": {"transfer": metrics.all_metrics(out["logits"], out["y"]),
                    "val": metrics.all_metrics(out["logits_val"], arrays["y_val"]),
                    "test": metrics.all_metrics(out["logits_test"], arrays["y_test"])},
        "runtime": settings,
    }
    for key in ("augmentation", "folds", "ensemble", "subset"):
        if key in built:
            record[key] = built[key]
    out["record"] = np.array(json.dumps(record, sort_keys=True, allow_nan=False))
    save_npz(out_set, out)
    save_states(out_model, stage.states)
    seconds = time.perf_counter() - started
    # No wall time in the file: reruns must be byte-identical (it is in the log and in
    # Snakemake's benchmark file).
    write_json(out_meta, record)
    scores = record["metrics"]
    print(f"transfer[{dataset}] {variant}: {record['n_transfer']} transfer points, teacher accuracy on them "
          f"{scores['transfer']['accuracy']:.4f} (mean max-prob {scores['transfer']['mean_max_prob']:.4f}), "
          f"test-time teacher test accuracy {scores['test']['accuracy']:.4f}, {seconds:.1f} s")
    return {**record, "seconds": seconds}
