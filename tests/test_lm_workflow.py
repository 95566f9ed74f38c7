"""Language models through real Snakemake: a study of language models alone on a synthetic
language (on-policy cells included) and a text study whose teacher is a local Hugging Face
causal LM with its own tokenizer (tests/lm_fixtures.py: nothing downloaded). Reruns of the
distill jobs write the same bytes; bad text stops the prepare job naming the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, make_workspace, run
from lm_fixtures import write_tiny_gpt2, write_tiny_tokenizer

from distillstudy.lm_grid import lm_cells

pytestmark = pytest.mark.slow

RECIPE = {"optimizer": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "constant"}, "epochs": 2, "batch_size": 16}
OFF = {"rkl": None, "jsd": None, "tvd": None, "skl": None, "srkl": None}
TEXTS = ["the teacher speaks and the student listens.", "a student learns from the teacher's words.",
         "the words of the teacher are many; the student keeps the few that matter."]


def lm_study(folder: Path, datasets: list[dict], objectives: dict) -> Path:
    """A workspace whose study (lm.yaml) has language models only."""
    ws = make_workspace(folder, ROOT / "params.yaml")
    study = {"prepare": {"datasets": datasets},
             "teacher": {"lm_recipe": RECIPE},
             "distill": {"students": [{"family": "gpt", "sizes": [8]}], "seeds": 2, "lm_recipe": RECIPE,
                         "token_objectives": {**OFF, **objectives}, "on_policy_fraction": [1]},
             "designs": {"datasets": []}, "walkthrough": {"enabled": False}, "evaluate": {"lm_samples": 8}}
    (ws / "lm.yaml").write_text(yaml.safe_dump(study))
    return ws


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_synthetic_language_study_with_on_policy_cells(tmp_path):
    hmm = {"name": "hmm", "kind": "synthetic_lm", "vocab": 5, "states": 3, "length": 8,
           "sequences": {"train": 48, "val": 24, "test": 24}, "teacher": {"family": "gpt", "size": 8}}
    ws = lm_study(tmp_path / "ws", [hmm], {"fkl": {"temperature": [1], "sequences": ["data", "student"]},
                                          "rkl": {"temperature": [1], "sequences": ["teacher"]}})
    run(["snakemake", "-c2", "--configfile", "lm.yaml"], ws)
    frame = pd.read_csv(ws / "reports/lm_results.csv")
    cells = lm_cells(yaml.safe_load((ws / "lm.yaml").read_text())["distill"] | {"alpha": [0.9]})
    assert sorted(frame.loc[frame["student"] == "gpt-8", "cell"].unique()) == sorted(cells)
    assert {"fkl_T1_student1", "rkl_T1_teacher", "fkl_T1_data_mix0.9", "baseline"} <= set(cells)
    students = frame[frame["student"] == "gpt-8"]
    # every cell: 2 replicates x 2 splits x the nine metrics (a synthetic language has the truth)
    assert (students.groupby("cell").size() == 2 * 2 * 9).all()
    assert set(frame["student"]) == {"gpt-8", "teacher", "oracle"}
    oracle = frame[(frame["student"] == "oracle") & (frame["metric"] == "kl_truth")]
    assert (oracle["value"] == 0).all()
    html = (ws / "reports/index.html").read_text()
    assert 'id="language-models"' in html and "Reference models on hmm" in html
    # the on-policy cell sampled its prefixes from the student at every step (lambda = 1)
    record = yaml.safe_load(run(["python", "-c", (
        "import json, numpy as np; r = json.loads(str(np.load('models/students/hmm/gpt-8/fkl_T1_student1.lm.npz')"
        "['record'])); print(json.dumps([[e['sampled_steps'], e['steps']] for c in r['curves'] for e in c]))")],
        ws).stdout)
    assert all(sampled == steps > 0 for sampled, steps in record)
    # reruns of the distill jobs write identical files
    before = {p: digest(p) for p in (ws / "models/students/hmm").rglob("*.lm.*")}
    run(["snakemake", "-c2", "--configfile", "lm.yaml", "--forcerun", "distill_lm", "--until", "distill_lm"], ws)
    assert {p: digest(p) for p in before} == before


def test_a_text_study_with_a_local_hugging_face_teacher(tmp_path):
    ws = lm_study(tmp_path / "ws", [], {"fkl": {"temperature": [1], "sequences": ["data", "student"]}})
    corpus = "\n\n".join(TEXTS * 6)
    (ws / "data/raw/corpus.txt").write_text(corpus, encoding="utf-8")
    tok = write_tiny_tokenizer(ws / "models/hf/tokenizer", TEXTS)
    write_tiny_gpt2(ws / "models/hf/teacher", vocab_size=len(tok), n_positions=32)
    prose = {"name": "prose", "kind": "text", "path": "data/raw/corpus.txt", "tokenizer": "models/hf/tokenizer",
             "block": 8, "teacher": {"hf": "models/hf/teacher"}}
    study = yaml.safe_load((ws / "lm.yaml").read_text())
    study["prepare"]["datasets"] = [prose]
    (ws / "lm.yaml").write_text(yaml.safe_dump(study))
    run(["snakemake", "-c2", "--configfile", "lm.yaml"], ws)
    frame = pd.read_csv(ws / "reports/lm_results.csv")
    students = frame[frame["student"] == "gpt-8"]
    assert set(students["cell"]) == {"baseline", "fkl_T1_data_mix0.9", "fkl_T1_student1"}
    assert "kl_truth" not in set(frame["metric"]) and "sample_teacher_nll" in set(students["metric"])
    assert set(frame["student"]) == {"gpt-8", "teacher"}  # no oracle for text
    meta = yaml.safe_load((ws / "models/teachers/prose.lm.json").read_text())
    assert meta["hf"]["model_type"] == "gpt2" and meta["vocab_size"] == len(tok)

    # bad text: invalid UTF-8 stops the prepare job, naming the file and the byte
    (ws / "data/raw/corpus.txt").write_bytes(corpus.encode() + b"\n\nbad \xff byte\n")
    failed = run(["snakemake", "-c2", "--configfile", "lm.yaml", "--until", "prepare"], ws, check=False)
    assert failed.returncode != 0
    log = (ws / "logs/prepare/prose.log").read_text()
    assert "data/raw/corpus.txt" in log and "UTF-8" in log
