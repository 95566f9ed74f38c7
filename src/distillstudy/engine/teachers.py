"""Teachers of one dataset's reference kind, built, trained or loaded on demand, and the
class-stratified folds and subsets they are trained on: what the `transfer` stage's
variants (stages/transfer.py) are made of.

A `TeacherFactory` builds every teacher the way the teacher stage builds the reference:
torch.manual_seed(seed), then make_teacher, so the initial weights come from the seed; it
trains it with train.train_teacher (or train.fit_convex for a convex teacher) on all of
x_train or on some of its points, validated on x_val. Several teachers of the reference
architecture (fold teachers, ensemble members) train together with `train_stack`: one
stacked model (engine/stacked.py), each member equal to itself trained alone by that
engine, its dropout masks drawn from its own generator. Which seed, which points, which
width, and how the logits are combined are the stage's choices.
"""

from __future__ import annotations

from distillstudy.engine import runtime  # noqa: F401  (first: imports torch with the GC off)
import numpy as np
import torch
from torch import nn

from distillstudy import grid
from distillstudy.engine import factories
from distillstudy.engine.models import SinLogistic, make_teacher, teacher_architecture
from distillstudy.engine.stacked import train_stack
from distillstudy.engine.train import fit_convex, predict, train_teacher

#: Largest |difference| allowed between the loaded reference teacher's forward pass and
#: its cached logits (float32, possibly another device) before the two files are
#: declared to be of different teachers.
REFERENCE_TOLERANCE = 1e-3

#: Teacher kinds with a CNN (size knob cnn_channels); the others are MLPs (mlp_width),
#: but for the convex grid.FIXED_TEACHER_KINDS, which have no size knob.
CNN_KINDS = ("mnist1d", "digits")


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of each point: within each class (in class order) the points are
    shuffled with one Generator(seed) and dealt round-robin, continuing where the previous
    class stopped, so every class's fold counts and the fold sizes differ by at most one."""
    y = np.asarray(y)
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {k}")
    if len(y) < k:
        raise ValueError(f"cross-fitting with {k} folds needs at least {k} training points, got {len(y)}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = (offset + np.arange(len(idx))) % k
        offset = (offset + len(idx)) % k
    return fold


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified subset of round(fraction * n) points.

    Per class the share is fraction * n_c, rounded by largest remainder so the total is
    exact, and at least one point per class (which may raise the total to the number of
    classes). The points of each class are the first of a permutation from Generator(seed).
    """
    y = np.asarray(y)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    classes, counts = np.unique(y, return_counts=True)
    total = max(int(round(fraction * len(y))), len(classes))
    quota = fraction * counts
    take = np.maximum(np.floor(quota).astype(np.int64), 1)
    # Adjust to the exact total: add where the remainder is largest, remove where the count
    # exceeds its quota most (never below one). Ties go to the lower class index.
    while take.sum() < total:
        room = np.where(take < counts, quota - take, -np.inf)
        take[int(np.argmax(room))] += 1
    while take.sum() > total:
        excess = np.where(take > 1, take - quota, -np.inf)
        take[int(np.argmax(excess))] -= 1
    rng = np.random.default_rng(seed)
    chosen = [np.flatnonzero(y == c)[rng.permutation(n_c)[:t]] for c, n_c, t in zip(classes, counts, take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class TeacherFactory:
    """Teachers of one dataset's reference kind on its splits (arrays as the prepare stage
    saves them), with the teacher section's knobs in `hyper` (None: not given).

    `label` prefixes errors and run names (e.g. "transfer[mnist1d]"). Records describe a
    teacher (name, seed, architecture, widths, parameter count, fit); scoring it is the
    caller's.
    """

    def __init__(self, *, kind: str, n_features: int, n_classes: int, arrays: dict[str, np.ndarray],
                 hyper: dict, device: str, label: str, builder=None, architecture: str | None = None):
        """`builder` (with `architecture`, its name): your teacher factory's module, built
        after seeding (factories.teacher_builder), instead of the kind's built-in teacher."""
        self.kind, self.n_features, self.n_classes = kind, n_features, n_classes
        self.builder = builder
        self.architecture = architecture or teacher_architecture(kind)
        self.mean, self.std = arrays["mean"], arrays["std"]
        self.hyper, self.device, self.label = hyper, device, label
        self.tensors = {k: torch.from_numpy(v).to(device) for k, v in arrays.items() if k.startswith(("x_", "y_"))}
        self.n_train = int(len(arrays["y_train"]))

    def require(self, names, why: str) -> None:
        missing = [n for n in names if self.hyper.get(n) is None]
        if missing:
            raise ValueError(f"{self.label}: {why} needs the teacher knob(s) "
                             f"{', '.join('--' + n.replace('_', '-') for n in missing)}")

    def build(self, seed: int, width: float = 1.0) -> tuple[nn.Module, dict]:
        """A freshly initialised teacher, `width` times the reference's size knob (at least 1),
        and its {"cnn_channels", "mlp_width"} (None where the kind has no such knob)."""
        torch.manual_seed(seed)  # as the teacher stage: the initial weights come from the seed
        return self._make(width)

    def module(self) -> nn.Module:
        """A fresh module of the reference architecture, unseeded (the caller seeds it: the
        born-again students of engine/generic.py's GenericStack)."""
        return self._make()[0]

    def _make(self, width: float = 1.0) -> tuple[nn.Module, dict]:
        """build() without the seeding: the factory the stacked trainer calls after seeding."""
        if self.builder is not None:
            if width != 1.0:
                raise ValueError(f"{self.label}: your teacher factory has no width knob; the teacher_width "
                                 "axis does not apply to it")
            return self.builder().to(self.device), {"cnn_channels": None, "mlp_width": None}
        if self.kind in CNN_KINDS:
            self.require(["cnn_channels", "dropout"], f"the {self.kind} teacher's architecture")
        elif self.kind not in grid.FIXED_TEACHER_KINDS:
            self.require(["mlp_width", "dropout"], f"the {self.kind} teacher's architecture")
        c, w = self.hyper["cnn_channels"], self.hyper["mlp_width"]
        cnn = None if c is None else max(1, round(c * width))
        mlp = None if w is None else max(1, round(w * width))
        model = make_teacher(self.kind, self.n_features, self.n_classes, self.mean, self.std, cnn, mlp,
                             self.hyper["dropout"]).to(self.device)
        return model, {"cnn_channels": cnn if self.kind in CNN_KINDS else None,
                       "mlp_width": mlp if self.kind == "csv" else None}

    def forward(self, model: nn.Module, x) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device) if isinstance(x, np.ndarray) else x
        return predict(model, x).cpu().numpy().astype(np.float32)

    def split_logits(self, model: nn.Module) -> dict[str, np.ndarray]:
        return {s: self.forward(model, self.tensors[f"x_{s}"]) for s in ("train", "val", "test")}

    def label_blocks(self, model: nn.Module, x: np.ndarray, block: int) -> np.ndarray:
        """Logits of every row of x, one forward per block of `block` rows: with block =
        n_train and the training points first, the first block is batched exactly as in the
        teacher stage, so it reproduces the cached logits_train (augmented copies follow)."""
        return np.concatenate([self.forward(model, x[i:i + block]) for i in range(0, len(x), block)])

    def _record(self, name: str, seed: int, model: nn.Module, widths: dict, width: float) -> dict:
        return {"name": name, "seed": int(seed), "architecture": self.architecture,
                "width_multiplier": float(width), **widths,
                "n_params": int(sum(p.numel() for p in model.parameters()))}

    def train(self, name: str, seed: int, *, points: np.ndarray | None = None, width: float = 1.0,
              select: str = "best") -> tuple[nn.Module, dict[str, np.ndarray], dict]:
        """A new teacher on x_train[points] (all when None), validated on x_val: early-stopped
        exactly like the reference (select="best"), or `max_epochs` epochs with the last kept
        (select="last"); a convex teacher is fitted to convergence either way.
        Returns the model, its logits on every split, and its record."""
        model, widths = self.build(seed, width)
        data = {"x_val": self.tensors["x_val"], "y_val": self.tensors["y_val"]}
        data["x_train"], data["y_train"] = self._points(points)
        run_name = f"{self.label} teacher {name}"
        h = self.hyper
        if isinstance(model, SinLogistic):
            fit = fit_convex(model, data, run_name)
        else:
            self.require(["max_epochs", "batch_size", "lr", "weight_decay"] + (["patience"] if select == "best" else []),
                         f"training teacher {name}")
            fit = train_teacher(model, data, seed=seed, max_epochs=h["max_epochs"], patience=h["patience"],
                                batch_size=h["batch_size"], lr=h["lr"], weight_decay=h["weight_decay"],
                                run_name=run_name, select=select)
        record = {**self._record(name, seed, model, widths, width), "fit": fit,
                  "n_train_points": int(len(data["y_train"])), "trained_here": True}
        return model, self.split_logits(model), record

    def _points(self, points: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        if points is None:
            return self.tensors["x_train"], self.tensors["y_train"]
        idx = torch.from_numpy(points).to(self.device)
        return self.tensors["x_train"][idx], self.tensors["y_train"][idx]

    def train_stack(self, names: list[str], seeds: list[int], points_list: list[np.ndarray | None], *,
                    select: str = "best") -> list[tuple[nn.Module, dict[str, np.ndarray], dict]]:
        """Teachers of the reference architecture, teacher `names[m]` seeded `seeds[m]` and trained
        on x_train[points_list[m]] (all when None), trained together: one stacked model per
        training-set size (engine/stacked.py), early-stopped per member (select="best") or
        `max_epochs` epochs, last kept (select="last"). A convex teacher is fitted alone
        (`train`): there is nothing to stack. Returns what `train` returns, for each teacher,
        in order; each record says which teachers it was stacked with."""
        if self.kind in grid.FIXED_TEACHER_KINDS:
            return [self.train(n, s, points=p, select=select) for n, s, p in zip(names, seeds, points_list)]
        self.require(["max_epochs", "batch_size", "lr", "weight_decay"] + (["patience"] if select == "best" else []),
                     f"training teachers {', '.join(names)}")
        h = self.hyper
        train_sets = [self._points(p) for p in points_list]
        fits = train_stack(lambda: self._make()[0], seeds, train_sets, (self.tensors["x_val"], self.tensors["y_val"]),
                           max_epochs=h["max_epochs"], patience=h["patience"], batch_size=h["batch_size"], lr=h["lr"],
                           weight_decay=h["weight_decay"], run_name=f"{self.label} teachers {', '.join(names)}",
                           select=select)
        _, widths = self._make()  # the same for every member (width 1)
        out = []
        for name, seed, (_, y), member in zip(names, seeds, train_sets, fits):
            partners = [n for n, (_, other) in zip(names, train_sets) if n != name and len(other) == len(y)]
            record = {**self._record(name, seed, member.model, widths, 1.0), "fit": member.fit,
                      "n_train_points": int(len(y)), "trained_here": True,
                      "training": {"engine": "stacked (engine/stacked.py)", "stacked_with": partners,
                                   "dropout_masks": "drawn from the member's own torch.Generator"}}
            out.append((member.model, self.split_logits(member.model), record))
        return out

    def load_reference(self, path: str, seed: int, logits_val: np.ndarray) -> tuple[nn.Module, dict]:
        """The reference teacher, rebuilt from its seed and saved weights; checked against its
        cached validation logits so a model file and a logits file of different teachers are
        never mixed. Returns the model and its record."""
        model, widths = self.build(seed)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.to(self.device).eval()
        val = self.forward(model, self.tensors["x_val"])
        gap = float(np.max(np.abs(val - logits_val))) if val.size else 0.0
        if not gap <= REFERENCE_TOLERANCE:
            raise ValueError(f"{self.label}: the teacher model {path} does not reproduce the cached "
                             f"teacher logits (largest difference on val {gap:.3g}); re-run the teacher stage")
        record = {**self._record("reference", seed, model, widths, 1.0),
                  "fit": {"selection": "the reference teacher (teacher stage), loaded, not retrained"},
                  "n_train_points": self.n_train, "trained_here": False}
        return model, record


def factory_from_spec(spec: dict, arrays: dict[str, np.ndarray], device, label: str) -> TeacherFactory:
    """The TeacherFactory of the reference teacher's architecture as a transfer set's record
    describes it (stages/transfer_sets.teacher_spec: kind, n_features, n_classes, input_shape,
    the teacher knobs, your factory or None): how a distill job rebuilds the teacher
    (consistent teaching) or trains students of its own architecture (born-again generations)."""
    builder = None if spec["factory"] is None else factories.teacher_builder(
        spec["factory"], tuple(spec["input_shape"]), spec["n_classes"], arrays["mean"], arrays["std"],
        f"{label} {spec['factory']}")
    return TeacherFactory(kind=spec["kind"], n_features=spec["n_features"], n_classes=spec["n_classes"],
                          arrays=arrays, hyper=spec["hyper"], device=device, label=label, builder=builder,
                          architecture=spec["factory"])
