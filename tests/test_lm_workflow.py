"""Language models through real Snakemake: one study of language models alone, on a synthetic
language (data, teacher-sampled and on-policy cells) and on a text whose teacher is a local
Hugging Face causal LM with its own tokenizer (tests/lm_fixtures.py: nothing downloaded).
Reruns of the distill jobs write the same bytes; bad text stops the prepare job naming the file.
DVC runs the language models in the tiny study (tests/params.tiny.yaml, tests/test_dvc.py)."""

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


def test_a_synthetic_language_and_a_text_with_a_local_hugging_face_teacher(tmp_path):
    """One study of language models alone: the synthetic language (data, teacher-sampled and
    on-policy cells) and a text whose teacher is a local GPT-2 with its own tokenizer."""
    hmm = {"name": "hmm", "kind": "synthetic_lm", "vocab": 5, "states": 3, "length": 8,
           "sequences": {"train": 48, "val": 24, "test": 24}, "teacher": {"family": "gpt", "size": 8}}
    ws = lm_study(tmp_path / "ws", [hmm], {"fkl": {"temperature": [1], "sequences": ["data", "student"]},
                                          "rkl": {"temperature": [1], "sequences": ["teacher"]}})
    corpus = "\n\n".join(TEXTS * 6)
    (ws / "data/raw/corpus.txt").write_text(corpus, encoding="utf-8")
    tok = write_tiny_tokenizer(ws / "models/hf/tokenizer", TEXTS)
    write_tiny_gpt2(ws / "models/hf/teacher", vocab_size=len(tok), n_positions=32)
    prose = {"name": "prose", "kind": "text", "path": "data/raw/corpus.txt", "tokenizer": "models/hf/tokenizer",
             "block": 8, "teacher": {"hf": "models/hf/teacher"}}
    study = yaml.safe_load((ws / "lm.yaml").read_text())
    study["prepare"]["datasets"].append(prose)
    (ws / "lm.yaml").write_text(yaml.safe_dump(study))
    run(["snakemake", "-c2", "--configfile", "lm.yaml"], ws)

    frame = pd.read_csv(ws / "reports/lm_results.csv")
    cells = lm_cells(study["distill"] | {"alpha": [0.9]})
    assert {"fkl_T1_student1", "rkl_T1_teacher", "fkl_T1_data_mix0.9", "baseline"} <= set(cells)
    for dataset in ("hmm", "prose"):
        rows = frame[(frame["dataset"] == dataset) & (frame["student"] == "gpt-8")]
        assert sorted(rows["cell"].unique()) == sorted(cells)
        metrics = 9 if dataset == "hmm" else 7  # text: no truth (kl_truth, sample_true_nll)
        assert (rows.groupby("cell").size() == 2 * 2 * metrics).all()  # replicates x splits x metrics
    assert set(frame.loc[frame["dataset"] == "hmm", "student"]) == {"gpt-8", "teacher", "oracle"}
    assert set(frame.loc[frame["dataset"] == "prose", "student"]) == {"gpt-8", "teacher"}  # no oracle for text
    oracle = frame[(frame["student"] == "oracle") & (frame["metric"] == "kl_truth")]
    assert (oracle["value"] == 0).all()
    meta = yaml.safe_load((ws / "models/teachers/prose.lm.json").read_text())
    assert meta["hf"]["model_type"] == "gpt2" and meta["vocab_size"] == len(tok)
    html = (ws / "reports/index.html").read_text()
    assert 'id="language-models"' in html and "Reference models on hmm" in html and "Reference models on prose" in html
    # the on-policy cell sampled its prefixes from the student at every step (lambda = 1)
    record = yaml.safe_load(run(["python", "-c", (
        "import json, numpy as np; r = json.loads(str(np.load('models/students/hmm/gpt-8/fkl_T1_student1.lm.npz')"
        "['record'])); print(json.dumps([[e['sampled_steps'], e['steps']] for c in r['curves'] for e in c]))")],
        ws).stdout)
    assert all(sampled == steps > 0 for sampled, steps in record)

    # reruns of the distill jobs write identical files
    before = {p: digest(p) for p in (ws / "models/students").rglob("*.lm.*")}
    run(["snakemake", "-c2", "--configfile", "lm.yaml", "--forcerun", "distill_lm", "--until", "distill_lm"], ws)
    assert {p: digest(p) for p in before} == before

    # bad text: invalid UTF-8 stops the prepare job, naming the file and the byte
    (ws / "data/raw/corpus.txt").write_bytes(corpus.encode() + b"\n\nbad \xff byte\n")
    failed = run(["snakemake", "-c2", "--configfile", "lm.yaml", "--until", "prepare"], ws, check=False)
    assert failed.returncode != 0
    log = (ws / "logs/prepare/prose.log").read_text()
    assert "data/raw/corpus.txt" in log and "UTF-8" in log
