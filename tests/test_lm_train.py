"""distillstudy.engine.lm_train and stages.distill_lm on a tiny synthetic language (vocab 8,
length 8, 48 training sequences, gpt width 8):

- step_loss against the formulas written out here: the baseline is the per-token NLL; on data
  prefixes (1 - alpha) NLL + alpha D; on the teacher's or the student's prefixes D alone; the
  teacher gets no gradient;
- where the prefixes come from: a teacher that puts (almost) all its mass on one token makes
  every training sequence of a `teacher` cell that token repeated; the `student` source samples
  every step at lambda = 1 and some steps at lambda = 0.5, and its other steps are data batches;
- fit is bit-identical across reruns and a run killed after epoch 1 resumes to the bits of an
  uninterrupted one;
- stages.distill_lm.run end to end (teacher trained by stages.teacher_lm.run): every metric per
  replicate and split, finite; reruns identical; a job killed after its first replicate (its
  second replicate's checkpoint path blocked by a folder) resumes from the finished-replicate
  file, and a finished-replicate file of another job is not taken.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distillstudy.artifacts import load_npz, read_record, save_npz
from distillstudy.engine import lm_data, lm_eval, lm_models
from distillstudy.engine.lm_train import LMRun, fit, step_loss
from distillstudy.engine.recipe import Recipe
from distillstudy.lm_grid import parse_lm_cell
from distillstudy.stages import distill_lm, teacher_lm
from distillstudy.token_objectives import token_term

SPEC = {"name": "hmm", "kind": "synthetic_lm", "vocab": 8, "states": 3, "length": 8,
        "sequences": {"train": 48, "val": 16, "test": 16}}
RECIPE = {"optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01}, "schedule": {"name": "constant"},
          "epochs": 1, "batch_size": 8}
# lr halves after epoch 1: a resumed run must set epoch 2's rate itself
TWO_EPOCHS = {**RECIPE, "schedule": {"name": "multistep", "milestones": [1], "gamma": 0.5}, "epochs": 2}
WIDTH = 8


@pytest.fixture(scope="module")
def arrays():
    return lm_data.synthetic_lm(SPEC, seed=5)


@pytest.fixture(scope="module")
def data(arrays):
    """(train, val) tokens, vocab_size, bos."""
    return (torch.from_numpy(arrays["tokens_train"]), torch.from_numpy(arrays["tokens_val"]),
            int(arrays["vocab_size"]), int(arrays["bos"]))


def _model(data, seed: int) -> torch.nn.Module:
    train, _, vocab_size, _ = data
    return lm_models.build_lm("gpt", vocab_size, train.shape[1] - 1, WIDTH, seed, "test")


def _run(cell: str, data, recipe=RECIPE, **extra) -> LMRun:
    spec = parse_lm_cell(cell)
    return LMRun(name=cell, seed=11, recipe=Recipe.from_params(recipe), objective=spec["objective"],
                 source=spec["source"], alpha=spec["alpha"], on_policy_fraction=spec["on_policy_fraction"],
                 hyper=spec["hyper"], bos=data[3], **extra)


class Recording(torch.nn.Module):
    """A student that keeps the ids of every training-mode forward (the steps' prefixes;
    sampling and validation run in eval mode)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.seen = []

    def forward(self, ids):
        if self.training:
            self.seen.append(ids.clone())
        return self.net(ids)


class OneToken(torch.nn.Module):
    """A teacher whose next token is `token` with probability 1 - 7e-13 at every position."""

    def __init__(self, vocab_size: int, token: int):
        super().__init__()
        self.register_buffer("logits", torch.zeros(vocab_size))
        self.logits[token] = 30.0

    def forward(self, ids):
        return self.logits.expand(*ids.shape, -1).clone()


def _silent(_line):
    pass


# ---- (a) step_loss: the formulas ---------------------------------------------------------------

def _token_nll(s, targets):
    return -torch.log_softmax(s.double(), -1).gather(-1, targets.unsqueeze(-1)).mean()


def _kl(p_logits, q_logits, temperature):
    """Mean over positions of KL(p || q) at a temperature, in float64."""
    log_p = torch.log_softmax(p_logits.double() / temperature, -1)
    log_q = torch.log_softmax(q_logits.double() / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


class Bigram(torch.nn.Module):
    """A teacher far from a freshly initialised student (whose logits are near 0): logits
    table[previous token], entries normal(0, 2)."""

    def __init__(self, vocab_size: int, seed: int):
        super().__init__()
        self.table = torch.nn.Parameter(2 * torch.randn(vocab_size, vocab_size,
                                                        generator=torch.Generator().manual_seed(seed)))

    def forward(self, ids):
        return self.table[ids]


@pytest.fixture(scope="module")
def batch(data):
    """A batch of 8 sequences and the logits of a student and a teacher on its prefixes."""
    seqs = data[0][:8]
    student, teacher = _model(data, 1), Bigram(data[2], 2)
    with torch.no_grad():
        s, t = student(seqs[:, :-1]), teacher(seqs[:, :-1])
    return seqs, student, teacher, s, t


def test_baseline_is_the_per_token_nll(data, batch):
    seqs, student, _, s, _ = batch
    loss = step_loss(_run("baseline", data), student, None, seqs, sampled=False)
    expected = _token_nll(s, seqs[:, 1:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx(F.cross_entropy(s.reshape(-1, s.shape[-1]), seqs[:, 1:].reshape(-1)).item(),
                                        rel=1e-6)


@pytest.mark.parametrize("cell, alpha, divergence", [
    ("fkl_T2_data_mix0.3", 0.3, lambda s, t: _kl(t, s, 2.0)),
    ("rkl_T1_data_mix0.5", 0.5, lambda s, t: _kl(s, t, 1.0)),
    ("rkl_T1_data_mix1", 1.0, lambda s, t: _kl(s, t, 1.0)),
    ("jsd_beta0.9_T1_data_mix0.9", 0.9, lambda s, t: token_term("jsd", s, t, torch.ones(s.shape[:2], dtype=torch.bool),
                                                                  beta=0.9, temperature=1.0).double()),
])
def test_on_data_the_loss_mixes_nll_and_the_divergence(data, batch, cell, alpha, divergence):
    seqs, student, teacher, s, t = batch
    loss = step_loss(_run(cell, data), student, teacher, seqs, sampled=False)
    expected = (1 - alpha) * _token_nll(s, seqs[:, 1:]) + alpha * divergence(s, t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("cell, sampled", [("fkl_T2_teacher", True), ("rkl_T1_student0.5", True),
                                           ("rkl_T1_student0.5", False)])
def test_on_sampled_prefixes_and_in_student_cells_the_divergence_alone(data, batch, cell, sampled):
    """GKD: the divergence alone on the teacher's and the student's samples, and on the data
    batches of a student cell (its 1 - lambda share)."""
    seqs, student, teacher, s, t = batch
    spec = parse_lm_cell(cell)
    temperature = spec["hyper"]["temperature"]
    expected = _kl(t, s, temperature) if spec["objective"] == "fkl" else _kl(s, t, temperature)
    loss = step_loss(_run(cell, data), student, teacher, seqs, sampled=sampled)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # whatever alpha the run carries: alpha mixes the NLL in on data prefixes only
    run = _run(cell, data)
    run.alpha = 0.5
    assert step_loss(run, student, teacher, seqs, sampled=sampled).item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(loss.item() - (0.5 * _token_nll(s, seqs[:, 1:]) + 0.5 * expected).item()) > 1e-3


def test_the_gradient_reaches_the_student_only(data, batch):
    seqs, _, _, _, _ = batch
    student, teacher = _model(data, 1), Bigram(data[2], 2)
    step_loss(_run("fkl_T1_data_mix0.5", data), student, teacher, seqs, sampled=False).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


# ---- (b) where the prefixes come from ----------------------------------------------------------

def test_teacher_cells_train_on_the_teachers_samples(data):
    train, val, vocab_size, bos = data
    student = Recording(_model(data, 3))
    history = fit(student, train, val, _run("rkl_T1_teacher", data), teacher=OneToken(vocab_size, 5), log=_silent)
    assert history[0]["sampled_steps"] == history[0]["steps"] == math.ceil(len(train) / RECIPE["batch_size"])
    assert len(student.seen) == history[0]["steps"]
    expected = torch.full((RECIPE["batch_size"], train.shape[1] - 1), 5)
    expected[:, 0] = bos
    for ids in student.seen:
        assert torch.equal(ids, expected)


def _data_rows(ids: torch.Tensor, train: torch.Tensor) -> bool:
    """Whether every row of a step's prefixes is a training sequence's."""
    rows = {tuple(r) for r in train[:, :-1].tolist()}
    return all(tuple(r) in rows for r in ids.tolist())


@pytest.mark.parametrize("fraction", [1, 0.5])
def test_student_cells_sample_on_policy_with_probability_lambda(data, fraction):
    train, val, _, _ = data
    student = Recording(_model(data, 3))
    cell = f"fkl_T1_student{fraction}"
    history = fit(student, train, val, _run(cell, data, recipe={**RECIPE, "epochs": 3}), teacher=_model(data, 2),
                  log=_silent)
    sampled = sum(row["sampled_steps"] for row in history)
    steps = sum(row["steps"] for row in history)
    assert steps == 3 * math.ceil(len(train) / RECIPE["batch_size"]) == len(student.seen)
    if fraction == 1:
        assert sampled == steps
    else:
        assert 0 < sampled < steps
    # the other steps are data batches; the sampled ones are not
    on_data = [_data_rows(ids, train) for ids in student.seen]
    assert sum(on_data) == steps - sampled
    if fraction != 1:  # each epoch draws its own on-policy steps (seeded by (seed, epoch))
        per_epoch = len(on_data) // 3
        assert len({tuple(on_data[e * per_epoch:(e + 1) * per_epoch]) for e in range(3)}) > 1


def test_data_cells_never_sample(data):
    train, val, _, _ = data
    student = Recording(_model(data, 3))
    history = fit(student, train, val, _run("tvd_data_mix0.5", data), teacher=_model(data, 2), log=_silent)
    assert history[0]["sampled_steps"] == 0
    assert all(_data_rows(ids, train) for ids in student.seen)
    # every training sequence once per epoch
    seen = sorted(tuple(r) for ids in student.seen for r in ids.tolist())
    assert seen == sorted(tuple(r) for r in train[:, :-1].tolist())


# ---- (c) reruns, (d) resume --------------------------------------------------------------------

def _state_bytes(model) -> dict:
    return {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}


def test_reruns_are_bit_identical(data):
    train, val, _, _ = data
    teacher = _model(data, 2)
    outcomes = []
    for seed in (3, 3, 4):
        student = _model(data, seed)
        history = fit(student, train, val, _run("jsd_beta0.5_T1_student0.5", data, recipe=TWO_EPOCHS),
                      teacher=teacher, log=_silent)
        outcomes.append((_state_bytes(student), history))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] != outcomes[2][0]  # another initialisation: other bits (the check can fail)


def test_a_killed_run_resumes_to_the_bits_of_an_uninterrupted_one(data, tmp_path):
    train, val, _, _ = data
    teacher = _model(data, 2)
    cell = "rkl_T1_student0.5"

    reference = _model(data, 3)
    expected = fit(reference, train, val, _run(cell, data, recipe=TWO_EPOCHS), teacher=teacher, log=_silent)

    checkpoint = tmp_path / "seed0.pt"

    def killed_after_epoch_1(line):  # the job dies once epoch 1 is written
        if "epoch 1/2" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(data, 3), train, val, _run(cell, data, recipe=TWO_EPOCHS, checkpoint=checkpoint, fingerprint="f"),
            teacher=teacher, log=killed_after_epoch_1)
    assert checkpoint.is_file()

    lines = []
    resumed = _model(data, 3)
    history = fit(resumed, train, val, _run(cell, data, recipe=TWO_EPOCHS, checkpoint=checkpoint, fingerprint="f"),
                  teacher=teacher, log=lines.append)
    assert any("resumed from epoch 1" in line for line in lines), lines
    assert not any("epoch 1/2" in line for line in lines)  # epoch 1 is not trained again
    assert history == expected
    assert _state_bytes(resumed) == _state_bytes(reference)


def test_a_checkpoint_of_other_params_is_not_resumed(data, tmp_path):
    train, val, _, _ = data
    checkpoint = tmp_path / "seed0.pt"
    fit(_model(data, 3), train, val, _run("baseline", data, checkpoint=checkpoint, fingerprint="old"), log=_silent)
    lines = []
    fit(_model(data, 3), train, val, _run("baseline", data, recipe=TWO_EPOCHS, checkpoint=checkpoint,
                                          fingerprint="new"), log=lines.append)
    assert any("from other params or data" in line for line in lines), lines
    assert any("epoch 1/2" in line for line in lines)


# ---- (e) the distill stage end to end ----------------------------------------------------------

@pytest.fixture(scope="module")
def stage(tmp_path_factory, arrays):
    """A prepared npz, its teacher trained by the teacher stage, and a distill job."""
    root = tmp_path_factory.mktemp("lm_stage")
    save_npz(root / "hmm.npz", arrays)
    teacher = {"family": "gpt", "size": WIDTH}
    teacher_lm.run(job={"dataset": "hmm", "teacher": teacher, "recipe": RECIPE, "seed": 7, "lm_samples": 8},
                   data=str(root / "hmm.npz"), out_model=str(root / "teacher.pt"), out_meta=str(root / "teacher.json"))
    job = {"dataset": "hmm", "family": "gpt", "size": WIDTH, "cell": "rkl_T1_student0.5", "seeds": 2, "seed": 7,
           "recipe": RECIPE, "teacher": teacher, "lm_samples": 8}
    return root, job


def _distill(root: Path, job: dict, name: str, checkpoint=None) -> tuple[Path, Path]:
    out = root / name
    out.mkdir(exist_ok=True)
    distill_lm.run(job=job, data=str(root / "hmm.npz"), out_model=str(out / "cell.lm.pt"),
                   out_logits=str(out / "cell.lm.npz"), teacher_model=str(root / "teacher.pt"),
                   checkpoint=None if checkpoint is None else str(checkpoint))
    return out / "cell.lm.pt", out / "cell.lm.npz"


@pytest.fixture(scope="module")
def twice(stage):
    root, job = stage
    return _distill(root, job, "first", checkpoint=root / "ck_first"), _distill(root, job, "second")


def _comparable(npz_path: Path) -> tuple[bytes, dict]:
    """The values and the record without its wall-clock seconds."""
    arrays = load_npz(npz_path)
    record = read_record(arrays)
    record.pop("seconds", None)
    return arrays["values"].tobytes(), record


def test_the_stage_scores_every_metric_per_replicate_and_split(stage, twice):
    (_, npz_path), _ = twice
    arrays = load_npz(npz_path)
    record = read_record(arrays)
    assert record["cell"] == "rkl_T1_student0.5" and record["source"] == "student"
    assert record["on_policy_fraction"] == 0.5 and record["objective"] == "rkl"
    rows = record["rows"]
    assert len(record["seeds"]) == 2 and len(set(record["seeds"])) == 2
    for replicate, seed in enumerate(record["seeds"]):
        for split in lm_eval.EVAL_SPLITS:
            got = [r["metric"] for r in rows if r["replicate"] == replicate and r["split"] == split]
            assert got == list(lm_eval.METRICS), (replicate, split, got)
            assert all(r["seed"] == seed for r in rows if r["replicate"] == replicate)
    assert {r["split"] for r in rows} == {"val", "test"}
    values = np.array([r["value"] for r in rows])
    assert np.isfinite(values).all()
    assert np.array_equal(arrays["values"], values)
    assert len(record["curves"]) == 2 and all(len(c) == RECIPE["epochs"] for c in record["curves"])
    # the two replicates are different models
    states = torch.load(twice[0][0], weights_only=True)
    assert set(states) == {"replicate0", "replicate1"}
    embeddings = [states[f"replicate{r}"]["token_embedding.weight"] for r in (0, 1)]
    assert not torch.equal(*embeddings)
    # a finished job leaves no checkpoint or finished-replicate file behind
    assert list((stage[0] / "ck_first").glob("*.pt")) == []


def test_stage_reruns_give_the_same_models_and_scores(twice):
    (model_1, npz_1), (model_2, npz_2) = twice
    assert model_1.read_bytes() == model_2.read_bytes()
    assert _comparable(npz_1) == _comparable(npz_2)


# Known bug (reported to the lead): distill_lm writes record["seconds"] (wall-clock time) into
# the .lm.npz, so reruns differ in bytes (docs/reproducibility.md promises byte-identical model
# and logits files; stages/distill.py keeps seconds out of its records for that reason). The same
# holds for teacher_lm's meta JSON. strict: remove the mark once the record has no seconds.
def test_stage_reruns_give_identical_file_bytes(twice):
    (_, npz_1), (_, npz_2) = twice
    assert npz_1.read_bytes() == npz_2.read_bytes()


def test_a_job_killed_after_its_first_replicate_resumes(stage, twice, capsys):
    """Killed in replicate 1: its checkpoint path is a folder, so the job dies writing epoch 1's
    checkpoint, after replicate 0's finished-replicate file. The rerun takes replicate 0 from that
    file and ends with the uninterrupted run's model and scores."""
    root, job = stage
    checkpoint = root / "ck_killed"
    (checkpoint / "seed1.pt").mkdir(parents=True)
    with pytest.raises(OSError):
        _distill(root, job, "killed", checkpoint=checkpoint)
    assert (checkpoint / "seed0.done.pt").is_file() and not (checkpoint / "seed1.done.pt").exists()
    saved = (checkpoint / "seed0.done.pt").read_bytes()
    (checkpoint / "seed1.pt").rmdir()

    capsys.readouterr()
    resumed = _distill(root, job, "resumed", checkpoint=checkpoint)
    log = capsys.readouterr().out
    assert "replicate 0: epoch" not in log and "replicate 1: epoch 1/1" in log  # replicate 0 came from its file
    reference = twice[1]
    assert resumed[0].read_bytes() == reference[0].read_bytes()
    assert _comparable(resumed[1]) == _comparable(reference[1])
    assert list(checkpoint.glob("*.pt")) == []

    # a finished-replicate file of another job (here: another lr) is not taken
    (checkpoint / "seed0.done.pt").write_bytes(saved)
    capsys.readouterr()
    other = {**job, "recipe": {**RECIPE, "optimizer": {**RECIPE["optimizer"], "lr": 0.02}}}
    _distill(root, other, "other", checkpoint=checkpoint)
    assert "replicate 0: epoch 1/1" in capsys.readouterr().out


FACTORY = """from distillstudy.engine.gpt import gpt


def tiny(vocab_size, block, size):
    return gpt(vocab_size, block, size)
"""


# Known bug (reported to the lead): lm_models.lm_factory asks factories.load_factory for the
# role "language model", which factories.ARGUMENTS lacks: every factory family on language-model
# data fails with KeyError 'language model'. strict: remove the mark once it builds.
def test_a_factory_family_builds_like_gpt(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lm_factory.py").write_text(FACTORY)
    train, _, vocab_size, _ = data
    module = lm_models.build_lm("lm_factory.py:tiny", vocab_size, train.shape[1] - 1, WIDTH, 3, "test")
    assert _state_bytes(module) == _state_bytes(_model(data, 3))


def test_a_factory_teacher_with_weights_is_loaded_not_retrained(data, tmp_path, monkeypatch):
    """prepare.datasets[*].teacher {factory, size, weights}: the teacher stage scores the given
    weights (trains nothing: the job has no recipe) and writes them as the teacher's weights."""
    import json

    import numpy as np

    from distillstudy.artifacts import save_npz
    from distillstudy.engine.models import save_state
    from distillstudy.stages import teacher_lm

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lm_factory.py").write_text(FACTORY)
    train, _, vocab_size, _ = data
    net = _model(data, 5)
    save_state(tmp_path / "given.pt", net.state_dict())
    arrays = lm_data.synthetic_lm({"name": "t", "vocab": vocab_size - 1, "states": 2, "length": train.shape[1] - 1,
                                   "sequences": {"train": 16, "val": 8, "test": 8}}, 3)
    save_npz(tmp_path / "t.npz", {k: np.asarray(v) for k, v in arrays.items()})
    job = {"dataset": "t", "teacher": {"factory": "lm_factory.py:tiny", "size": WIDTH, "weights": "given.pt"},
           "recipe": None, "seed": 1, "lm_samples": 4}
    record = teacher_lm.run(job=job, data=str(tmp_path / "t.npz"), out_model=str(tmp_path / "out.pt"),
                            out_meta=str(tmp_path / "out.json"))
    assert "curves" not in record and record["weights_sha256"]
    saved = torch.load(tmp_path / "out.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    assert json.loads((tmp_path / "out.json").read_text())["metrics"]["teacher"]["test"]["nll"] > 0
