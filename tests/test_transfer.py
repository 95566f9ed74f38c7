"""The transfer stage builds each variant's transfer set as its protocol says.

Tiny data (a subset of scikit-learn digits, a synthetic MNIST-1D-shaped set, the sine
distribution) and teachers of a few epochs: the whole file runs in seconds on one core.
"""

import json

import numpy as np
import pytest
import torch
from distillstudy import artifacts
from distillstudy.engine import datasets, runtime, seeds, stacked
from distillstudy.analysis import metrics
from distillstudy.stages import teacher, transfer
from distillstudy.engine.models import make_teacher
from distillstudy.engine.train import predict

SEED = 11
TEACHER = {"max_epochs": 10, "patience": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0,
           "cnn_channels": 4, "mlp_width": 16, "dropout": 0.1}
TRANSFER = {"folds": 3, "copies": 2, "noise": 0.05, "shift": 3, "pixel_shift": 0.5}


def write_dataset(folder, name, kind, splits: datasets.Splits):
    arrays = datasets.to_arrays(splits)
    info = {"name": name, "kind": kind, "sha256": datasets.content_hash(arrays),
            "n_train": int(len(arrays["y_train"])), "n_val": int(len(arrays["y_val"])),
            "n_test": int(len(arrays["y_test"])), "n_features": int(arrays["x_train"].shape[1]),
            "n_classes": len(splits.class_names), "feature_names": splits.feature_names,
            "class_names": splits.class_names}
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.save_npz(folder / f"{name}.npz", arrays)
    (folder / f"{name}.json").write_text(json.dumps(info))
    out = {"data": str(folder / f"{name}.npz"), "meta": str(folder / f"{name}.json"),
           "teacher_model": str(folder / f"{name}.pt"), "teacher_logits": str(folder / f"{name}.logits.npz"),
           "dataset": name, "kind": kind, "folder": folder}
    out["teacher_record"] = teacher.run(data=out["data"], meta=out["meta"], global_seed=SEED,
                                        out_model=out["teacher_model"], out_logits=out["teacher_logits"],
                                        out_meta=str(folder / f"{name}.teacher.json"), **TEACHER)
    return out


def split(x, y, n_train, n_val):
    return ({"train": x[:n_train], "val": x[n_train:n_train + n_val], "test": x[n_train + n_val:]},
            {"train": y[:n_train], "val": y[n_train:n_train + n_val], "test": y[n_train + n_val:]})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.isin(bunch.target, [0, 1, 2, 3])  # 4 classes, 720 images: take 300
    x, y = bunch.data[keep][:300], bunch.target[keep][:300]
    xs, ys = split(x, y, 180, 60)
    return write_dataset(tmp_path_factory.mktemp("digits"), "tinydigits", "digits",
                         datasets.Splits(xs, ys, [f"px{i}" for i in range(64)], ["0", "1", "2", "3"]))


@pytest.fixture(scope="module")
def wave(tmp_path_factory):
    """MNIST-1D-shaped: 40 samples per row, class = which bump, randomly placed, plus noise."""
    rng = np.random.default_rng(0)
    n, t = 240, np.arange(40)
    y = rng.integers(0, 3, n)
    centre = rng.integers(5, 35, n)
    width = np.array([1.5, 3.0, 6.0])[y]
    x = np.exp(-0.5 * ((t[None, :] - centre[:, None]) / width[:, None]) ** 2) + rng.normal(0, 0.1, (n, 40))
    xs, ys = split(x, y, 120, 60)
    return write_dataset(tmp_path_factory.mktemp("wave"), "wave", "mnist1d",
                         datasets.Splits(xs, ys, [f"t{i}" for i in range(40)], ["0", "1", "2"]))


@pytest.fixture(scope="module")
def sine(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("sine"), "sine", "sine", datasets.make_sine(120, 200, 0.2, 3))


def build(ds, variant, out_dir, **over):
    kw = {**TEACHER, **TRANSFER, **over}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"out_set": str(out_dir / "set.npz"), "out_model": str(out_dir / "teachers.pt"),
             "out_meta": str(out_dir / "set.json")}
    record = transfer.run(data=ds["data"], meta=ds["meta"], teacher_model=ds["teacher_model"],
                          teacher_logits=ds["teacher_logits"], dataset=ds["dataset"], variant=variant,
                          global_seed=SEED, out_set=paths["out_set"], out_model=paths["out_model"],
                          out_meta=paths["out_meta"], **kw)
    out = artifacts.load_npz(paths["out_set"])
    states = torch.load(paths["out_model"], weights_only=True)
    return record, out, states, paths


def rebuild(ds, state, cnn_channels=TEACHER["cnn_channels"], mlp_width=TEACHER["mlp_width"]):
    info = json.loads(open(ds["meta"]).read())
    arrays = artifacts.load_npz(ds["data"])
    model = make_teacher(info["kind"], info["n_features"], info["n_classes"], arrays["mean"], arrays["std"],
                         cnn_channels, mlp_width, TEACHER["dropout"])
    model.load_state_dict(state)
    return model.eval()


def forward(model, x):
    return predict(model, torch.from_numpy(np.ascontiguousarray(x))).numpy()


def check_common(out, record, ds, variant):
    arrays = artifacts.load_npz(ds["data"])
    n = len(out["y"])
    assert out["x"].dtype == np.float32 and out["x"].shape == (n, arrays["x_train"].shape[1])
    assert out["y"].dtype == np.int64 and out["source"].dtype == np.int64 and out["fold"].dtype == np.int64
    assert out["logits"].dtype == np.float32 and out["logits"].shape[0] == n
    assert out["logits_val"].shape[0] == len(arrays["y_val"]) and out["logits_test"].shape[0] == len(arrays["y_test"])
    assert out["train_mask"].dtype == bool and out["train_mask"].shape[1] == len(arrays["y_train"])
    assert np.array_equal(out["y"], arrays["y_train"][out["source"]])
    stored = json.loads(str(out["record"]))
    assert stored == {k: v for k, v in json.loads(json.dumps(record)).items() if k != "seconds"}
    assert stored["variant"] == variant and stored["n_transfer"] == n and stored["data_sha256"]
    assert stored["metrics"]["transfer"]["accuracy"] == metrics.accuracy(out["logits"], out["y"])
    return arrays, stored


def test_cross_fitted_target_never_comes_from_a_teacher_that_saw_the_point(digits, tmp_path):
    record, out, states, _ = build(digits, "transfer-cross_fitted", tmp_path)
    arrays, stored = check_common(out, record, digits, "transfer-cross_fitted")
    k, n = TRANSFER["folds"], len(arrays["y_train"])
    fold, mask = out["fold"], out["train_mask"]
    assert sorted(states) == [f"fold{j}" for j in range(k)] and mask.shape == (k, n)
    # Every point has exactly one fold, and is outside exactly that fold teacher's training set.
    assert fold.min() == 0 and fold.max() == k - 1
    assert np.array_equal(mask, np.stack([fold != j for j in range(k)]))
    assert not mask[fold, np.arange(n)].any() and (mask.sum(axis=0) == k - 1).all()
    # Stratified: per class, fold counts differ by at most one.
    for c in np.unique(arrays["y_train"]):
        counts = np.bincount(fold[arrays["y_train"] == c], minlength=k)
        assert counts.max() - counts.min() <= 1
    # Each stored target equals the forward pass of its own fold teacher, and not the others'.
    preds = np.stack([forward(rebuild(digits, states[f"fold{j}"]), arrays["x_train"]) for j in range(k)])
    np.testing.assert_allclose(out["logits"], preds[fold, np.arange(n)], rtol=0, atol=1e-5)
    for j in range(k):
        others = fold != j
        assert np.abs(out["logits"][others] - preds[j][others]).max() > 1e-3
    # The fold teachers ARE the stacked engine's teachers of their seeds on exactly the points of
    # their masks (seed -> init, batch order and dropout masks). Not train_teacher's: the stacked
    # engine draws dropout masks from each teacher's own generator (tests/test_stacked.py proves
    # a member equals itself trained alone by that engine).
    fold_seeds = [seeds.derive_seed(SEED, digits["dataset"], "cross_fitted", j) for j in range(k)]
    assert [t["seed"] for t in stored["teachers"]] == fold_seeds
    assert [t["n_train_points"] for t in stored["teachers"]] == mask.sum(axis=1).tolist()
    assert stored["teachers"][0]["training"]["stacked_with"] == ["fold1", "fold2"]
    info = json.loads(open(digits["meta"]).read())
    device = runtime.configure()["device"]  # the stage's device: on CUDA the bits differ from CPU

    def factory():
        return make_teacher("digits", 64, info["n_classes"], arrays["mean"], arrays["std"], TEACHER["cnn_channels"],
                            TEACHER["mlp_width"], TEACHER["dropout"]).to(device)

    def tensor(a):
        return torch.from_numpy(a).to(device)

    sets = [(tensor(arrays["x_train"][m]), tensor(arrays["y_train"][m])) for m in mask]
    fits = stacked.train_stack(factory, fold_seeds, sets, (tensor(arrays["x_val"]), tensor(arrays["y_val"])),
                               max_epochs=TEACHER["max_epochs"], patience=TEACHER["patience"],
                               batch_size=TEACHER["batch_size"], lr=TEACHER["lr"], weight_decay=0.0, run_name="check")
    for j, member in enumerate(fits):
        assert member.fit == stored["teachers"][j]["fit"]
        for key, value in member.model.state_dict().items():
            assert torch.equal(value.cpu(), states[f"fold{j}"][key]), (j, key)
    # Test-time teacher: log mean probability of the fold teachers.
    val = [forward(rebuild(digits, states[f"fold{j}"]), arrays["x_val"]) for j in range(k)]
    np.testing.assert_allclose(out["logits_val"], metrics.log_mean_prob(val), rtol=0, atol=1e-5)
    assert stored["folds"]["k"] == k and sum(stored["folds"]["sizes"]) == n


def test_augmented_copies_labels_and_reference_logits(wave, tmp_path):
    record, out, states, _ = build(wave, "transfer-augmented", tmp_path / "a", noise=0.0)
    arrays, stored = check_common(out, record, wave, "transfer-augmented")
    n, copies, shift = len(arrays["y_train"]), TRANSFER["copies"], TRANSFER["shift"]
    assert out["x"].shape[0] == n * (copies + 1) and states == {}
    assert np.array_equal(out["x"][:n], arrays["x_train"])
    assert np.array_equal(out["source"], np.tile(np.arange(n), copies + 1))
    assert (out["fold"] == -1).all() and out["train_mask"].shape == (0, n)
    # noise = 0: each copy is a circular roll of its source by a nonzero shift within +-shift.
    for i in range(n, len(out["x"])):
        src = arrays["x_train"][out["source"][i]]
        assert any(np.array_equal(out["x"][i], np.roll(src, s)) for s in range(-shift, shift + 1) if s != 0), i
    # Targets: the reference teacher's forward on every row; the original rows reproduce its cached logits.
    ref = rebuild(wave, torch.load(wave["teacher_model"], weights_only=True))
    np.testing.assert_allclose(out["logits"], forward(ref, out["x"]), rtol=0, atol=1e-5)
    cached = artifacts.load_npz(wave["teacher_logits"])
    assert np.array_equal(out["logits"][:n], cached["logits_train"])
    assert np.array_equal(out["logits_test"], cached["logits_test"])
    assert stored["augmentation"]["copies"] == copies and stored["augmentation"]["noise"] == 0.0
    per_block = stored["augmentation"]["teacher_accuracy_per_block"]
    assert len(per_block) == copies + 1
    assert per_block[0] == metrics.accuracy(cached["logits_train"], arrays["y_train"])
    assert stored["reference_teacher"]["model_sha256"] == transfer.file_sha256(wave["teacher_model"])


def test_augmented_is_byte_identical_across_runs(wave, tmp_path):
    _, first, _, a = build(wave, "transfer-augmented", tmp_path / "a")
    _, second, _, b = build(wave, "transfer-augmented", tmp_path / "b")
    for key in ("out_set", "out_model", "out_meta"):  # the record has no wall time in it
        assert open(a[key], "rb").read() == open(b[key], "rb").read(), key
    n = len(artifacts.load_npz(wave["data"])["y_train"])
    assert not np.array_equal(first["x"][n:2 * n], first["x"][2 * n:])  # copies differ from each other


def test_labels_subset_is_stratified_with_the_cached_logits(digits, tmp_path):
    record, out, states, _ = build(digits, "labels-0.3", tmp_path / "a")
    arrays, stored = check_common(out, record, digits, "labels-0.3")
    y_train, n = arrays["y_train"], len(arrays["y_train"])
    assert len(out["y"]) == round(0.3 * n) and states == {}
    assert len(np.unique(out["source"])) == len(out["source"])
    counts, full = np.bincount(out["y"], minlength=4), np.bincount(y_train, minlength=4)
    assert (counts > 0).all() and (np.abs(counts - 0.3 * full) < 1).all()
    cached = artifacts.load_npz(digits["teacher_logits"])
    assert np.array_equal(out["logits"], cached["logits_train"][out["source"]])
    assert np.array_equal(out["x"], arrays["x_train"][out["source"]])
    assert np.array_equal(out["logits_val"], cached["logits_val"])
    assert stored["subset"]["seed"] == seeds.derive_seed(SEED, digits["dataset"], "labels", "0.3")
    # A tiny fraction still keeps one point per class.
    _, few, _, _ = build(digits, "labels-0.001", tmp_path / "b")
    assert np.array_equal(np.bincount(few["y"], minlength=4), [1, 1, 1, 1])


def test_ensemble_member0_is_the_reference_and_targets_are_log_mean_probs(digits, tmp_path):
    record, out, states, _ = build(digits, "ensemble-3", tmp_path)
    arrays, stored = check_common(out, record, digits, "ensemble-3")
    assert sorted(states) == ["member0", "member1", "member2"]
    assert [t["training"]["stacked_with"] for t in stored["teachers"][1:]] == [["member2"], ["member1"]]
    reference = torch.load(digits["teacher_model"], weights_only=True)
    assert all(torch.equal(reference[k], states["member0"][k]) for k in reference)
    assert not torch.equal(reference["head.weight"], states["member1"]["head.weight"])
    members = [rebuild(digits, states[f"member{m}"]) for m in range(3)]
    for split, key in (("train", "logits"), ("test", "logits_test")):
        expect = metrics.log_mean_prob([forward(m, arrays[f"x_{split}"]) for m in members])
        np.testing.assert_allclose(out[key], expect, rtol=0, atol=1e-5)
    ens = stored["ensemble"]
    assert len(ens["member_test_accuracy"]) == 3
    assert ens["ensemble_test_accuracy"] == metrics.accuracy(out["logits_test"], arrays["y_test"])
    assert [t["seed"] for t in stored["teachers"]] == [seeds.teacher_seed(SEED, digits["dataset"])] + [
        seeds.derive_seed(SEED, digits["dataset"], "ensemble", m) for m in (1, 2)]


def plain_teacher_epochs(ds, seed, epochs):
    """The teacher protocol written out plainly, not with train.train_teacher: the reference
    architecture built after torch.manual_seed(seed), torch.optim.Adam, batches in the order of
    Generator([seed, 1]), dropout on while training. Every epoch's val NLL and (CPU) weights."""
    info, arrays = json.loads(open(ds["meta"]).read()), artifacts.load_npz(ds["data"])
    device = runtime.configure()["device"]  # the stages' device: on CUDA the bits differ from CPU
    torch.manual_seed(seed)
    net = make_teacher(info["kind"], info["n_features"], info["n_classes"], arrays["mean"], arrays["std"],
                       TEACHER["cnn_channels"], TEACHER["mlp_width"], TEACHER["dropout"]).to(device)
    x, y, x_val, y_val = (torch.from_numpy(arrays[k]).to(device) for k in ("x_train", "y_train", "x_val", "y_val"))
    opt = torch.optim.Adam(net.parameters(), lr=TEACHER["lr"], weight_decay=TEACHER["weight_decay"])
    order, out = np.random.default_rng([seed, 1]), []
    for _ in range(epochs):
        net.train()
        perm = torch.from_numpy(order.permutation(len(y))).to(device)
        for start in range(0, len(y), TEACHER["batch_size"]):
            idx = perm[start:start + TEACHER["batch_size"]]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.cross_entropy(net(x_val), y_val))
        out.append((val, {k: v.cpu().clone() for k, v in net.state_dict().items()}))
    return out


def test_in_sample_trains_exactly_max_epochs_on_the_reference_trajectory(digits, tmp_path):
    record, out, states, _ = build(digits, "transfer-in_sample", tmp_path / "a")
    arrays, stored = check_common(out, record, digits, "transfer-in_sample")
    fit = stored["teachers"][0]["fit"]
    epochs = TEACHER["max_epochs"]
    assert (fit["epochs_run"], fit["best_epoch"]) == (epochs, epochs) and "no early stopping" in fit["selection"]
    seed = seeds.teacher_seed(SEED, digits["dataset"])
    assert stored["teachers"][0]["seed"] == seed
    model = rebuild(digits, states["in_sample"])
    np.testing.assert_allclose(out["logits"], forward(model, arrays["x_train"]), rtol=0, atol=1e-5)
    # The in-sample teacher IS the plainly written loop after max_epochs epochs, last kept,
    # and its record reports that trajectory's validation NLL.
    expect = plain_teacher_epochs(digits, seed, epochs)
    for key, value in expect[-1][1].items():
        assert torch.equal(states["in_sample"][key], value), key
    vals = [v for v, _ in expect]
    assert fit["lowest_val_nll_epoch"] == int(np.argmin(vals)) + 1
    assert fit["final_val_nll"] == pytest.approx(vals[-1], rel=1e-6)
    assert fit["lowest_val_nll"] == pytest.approx(min(vals), rel=1e-6)
    # The reference stopped early (a precondition of this test's data) on the same trajectory:
    # the loop's weights at the reference's best epoch ARE the reference, and the in-sample
    # teacher, trained on past it, differs from it.
    ref_fit = digits["teacher_record"]["fit"]
    assert ref_fit["best_epoch"] < ref_fit["epochs_run"] < epochs
    reference = torch.load(digits["teacher_model"], weights_only=True)
    for key, value in reference.items():
        assert torch.equal(expect[ref_fit["best_epoch"] - 1][1][key], value), key
    assert not torch.equal(states["in_sample"]["head.weight"], reference["head.weight"])


def test_width_teacher_has_the_scaled_channel_count(digits, tmp_path):
    record, out, states, _ = build(digits, "width-0.5", tmp_path / "a")
    arrays, stored = check_common(out, record, digits, "width-0.5")
    assert list(states) == ["width-0.5"]
    assert states["width-0.5"]["features.0.weight"].shape[0] == 2  # round(4 * 0.5)
    assert stored["teachers"][0]["cnn_channels"] == 2 and stored["teachers"][0]["width_multiplier"] == 0.5
    model = rebuild(digits, states["width-0.5"], cnn_channels=2)
    np.testing.assert_allclose(out["logits"], forward(model, arrays["x_train"]), rtol=0, atol=1e-5)
    _, _, thin, _ = build(digits, "width-0.05", tmp_path / "b")
    assert thin["width-0.05"]["features.0.weight"].shape[0] == 1  # never below one channel


def test_sine_protocols_and_inapplicable_variants(sine, tmp_path):
    record, out, states, _ = build(sine, "transfer-cross_fitted", tmp_path / "cf")
    arrays, _ = check_common(out, record, sine, "transfer-cross_fitted")
    preds = np.stack([forward(rebuild(sine, states[f"fold{j}"]), arrays["x_train"]) for j in range(3)])
    n = len(arrays["y_train"])
    np.testing.assert_allclose(out["logits"], preds[out["fold"], np.arange(n)], rtol=0, atol=1e-5)
    assert not out["train_mask"][out["fold"], np.arange(n)].any()
    record, _, _, _ = build(sine, "transfer-in_sample", tmp_path / "in")
    assert "convex" in record["protocol"]
    record, out, _, _ = build(sine, "transfer-augmented", tmp_path / "aug")
    assert out["x"].shape == (3 * n, 1) and "jitter" in record["augmentation"]["method"]
    for variant in ("width-0.5", "ensemble-3"):
        with pytest.raises(ValueError, match=f"{variant}.*does not apply to dataset kind 'sine'"):
            build(sine, variant, tmp_path / variant)


@pytest.mark.parametrize("variant", ["transfer-magic", "foo-1", "width-abc", "reference", "transfer-early_stopped",
                                     "epochs-100"])
def test_variants_without_a_transfer_set_fail_naming_the_variant(sine, tmp_path, variant):
    with pytest.raises(ValueError, match=variant):
        build(sine, variant, tmp_path)
    assert not (tmp_path / "set.npz").exists()


def test_mismatched_teacher_files_fail(wave, tmp_path):
    cached = artifacts.load_npz(wave["teacher_logits"])
    cached["logits_val"] = cached["logits_val"] + 1.0
    bad = tmp_path / "bad.logits.npz"
    artifacts.save_npz(bad, cached)
    with pytest.raises(ValueError, match="does not reproduce the cached teacher logits"):
        build({**wave, "teacher_logits": str(bad)}, "transfer-augmented", tmp_path / "out")
    with pytest.raises(ValueError, match="does not match"):
        build({**wave, "dataset": "other"}, "labels-0.5", tmp_path / "out")


def test_knobs_a_variant_does_not_read_may_be_omitted(digits, sine, tmp_path):
    """The CLI passes only the knobs a variant reads; the others arrive as None."""
    unused = {k: None for k in ("max_epochs", "patience", "batch_size", "lr", "weight_decay", *TRANSFER)}
    record, out, _, _ = build(digits, "labels-0.5", tmp_path / "a", **unused)
    assert len(out["y"]) == 90 and set(record["teacher_hyperparameters"]) == {"cnn_channels", "mlp_width", "dropout"}
    build(sine, "transfer-cross_fitted", tmp_path / "b", **{**unused, "folds": 2})  # a convex fit needs no epochs
    with pytest.raises(ValueError, match="transfer-cross_fitted.*--folds"):
        build(digits, "transfer-cross_fitted", tmp_path / "c", **unused)
    with pytest.raises(ValueError, match="--max-epochs"):
        build(digits, "transfer-in_sample", tmp_path / "d", **unused)
    with pytest.raises(ValueError, match="--copies, --noise, --pixel-shift"):
        build(digits, "transfer-augmented", tmp_path / "e", **unused)
    with pytest.raises(ValueError, match="--cnn-channels"):
        build(digits, "labels-0.5", tmp_path / "f", cnn_channels=None)
