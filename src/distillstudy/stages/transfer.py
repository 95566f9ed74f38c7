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
    generation-1          x_train, y_train                 the reference teacher's cached logits, and how
                                                           to build its architecture (born-again students;
                                                           later generations' distill jobs read the
                                                           previous generation's cell instead)
    resample-<r>          bootstrap resample r of the      a teacher of the reference kind refitted on
                          training points (with            the resample (own seed, early-stopped): the
                          replacement)                     variance design (analysis/variance.py)

The K fold teachers (cross_fitted) and the M-1 new ensemble members train together, as one
stacked model per training-set size (TeacherFactory.train_stack, engine/stacked.py), each
early-stopped on its own validation NLL and equal to itself trained alone by that engine.
Their dropout masks come from each teacher's own torch.Generator, seeded
derive_seed(teacher seed, "dropout"), not from torch's global stream as in
train.train_teacher, and Adam runs through its fused kernel: their weights are therefore
not those train_teacher would give from the same seed. The in_sample, width and resample teachers train alone with train_teacher (in_sample
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
    resample r       (global_seed, dataset, "resample", r); its teacher (that seed, "teacher")
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
from distillstudy.engine import factories, seeds
from distillstudy.analysis import metrics
from distillstudy import grid
from distillstudy.artifacts import file_sha256, load_npz, save_npz, write_json
from distillstudy.engine.models import save_states
from distillstudy.engine.teachers import TeacherFactory
from distillstudy.stages import transfer_sets


class _Stage:
    """One run's inputs, the engine's teacher factory, and what the variant has produced so
    far: the weights of every teacher trained here and every teacher's record (scored here)."""

    def __init__(self, *, arrays, info, global_seed, hyper, device, cached, teacher_model, factory=None):
        self.arrays, self.info, self.cached, self.teacher_model = arrays, info, cached, teacher_model
        self.kind, self.name = info["kind"], info["name"]
        self.global_seed = global_seed
        self.factory_spec = factory  # your teacher factory "<file>.py:<function>", or None
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
    builder = transfer_sets.builder(variant, parsed, info["kind"])
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
    for key in ("augmentation", "folds", "ensemble", "subset", "consistent", "generation"):
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
