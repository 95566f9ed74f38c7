"""params.check_params on studies with language models (lm_params.lm_errors and the schema):
the repository's params.yaml with a synthetic_lm dataset and a gpt family passes; each bad
input is refused before any job with a message naming its key; students.dataset_students
gives each dataset only the families of its modality."""

import copy
from pathlib import Path

import pytest
import yaml
from distillstudy import params as params_module
from distillstudy.errors import ParamsError
from distillstudy.params import check_params
from distillstudy.students import LM_FAMILIES, LM_KINDS, dataset_students, without_language_models

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"optimizer": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "constant"}, "epochs": 2,
          "batch_size": 8}
HMM = {"name": "hmm", "kind": "synthetic_lm", "vocab": 8, "states": 3, "length": 8,
       "sequences": {"train": 32, "val": 8, "test": 8}}


def _classification_only() -> dict:
    """params.yaml without whatever language-model part it has today (datasets, families, keys)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["datasets"] = [d for d in params["prepare"]["datasets"] if d["kind"] not in LM_KINDS]
    params["distill"]["students"] = [e for e in params["distill"]["students"] if e["family"] not in LM_FAMILIES]
    for key in ("lm_recipe", "token_objectives", "sequences", "on_policy_fraction"):
        params["distill"].pop(key, None)
    params["teacher"].pop("lm_recipe", None)
    return params


@pytest.fixture(scope="module", autouse=True)
def schema_read_once():
    """params.load_schema parses the 560-line schema with the pure-Python YAML loader three times
    per check_params (~0.1-0.3 s); the file does not change during this module, so read it once."""
    schema = params_module.load_schema()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(params_module, "load_schema", lambda: copy.deepcopy(schema))
        yield


@pytest.fixture(scope="module")
def classification() -> dict:
    return _classification_only()


@pytest.fixture
def study(classification) -> dict:
    """The repository's study plus a tiny synthetic language, a gpt family and their recipes."""
    params = copy.deepcopy(classification)
    params["prepare"]["datasets"].append(copy.deepcopy(HMM))
    params["distill"]["students"].append({"family": "gpt", "sizes": [8, 16]})
    params["distill"]["lm_recipe"] = copy.deepcopy(RECIPE)
    params["teacher"]["lm_recipe"] = copy.deepcopy(RECIPE)
    params["distill"]["token_objectives"] = {"fkl": {"temperature": [1]}, "rkl": {"temperature": [1],
                                                                                   "sequences": ["data", "student"]}}
    params["distill"]["sequences"] = ["data", "teacher"]
    params["distill"]["on_policy_fraction"] = [0.5]
    return params


@pytest.fixture
def files(tmp_path) -> Path:
    """A base folder with a corpus, a tokenizer folder and a teacher folder (only their
    existence is checked before any job; their contents by the jobs that read them)."""
    (tmp_path / "corpus.txt").write_text("the cat sat.\n\na dog ran.\n", encoding="utf-8")
    (tmp_path / "tok").mkdir()
    (tmp_path / "teacher").mkdir()
    return tmp_path


def refused(params: dict, base, *keys: str) -> str:
    with pytest.raises(ParamsError) as caught:
        check_params(params, base)
    message = str(caught.value)
    for key in keys:
        assert key in message, f"{key!r} not in:\n{message}"
    return message


def _text(**extra) -> dict:
    return {"name": "prose", "kind": "text", "path": "corpus.txt", "tokenizer": "bytes", "block": 8, **extra}


def test_the_repository_study_with_a_language_passes(study, files):
    check_params(study, files)


def test_text_datasets_with_bytes_or_a_folder_and_a_hf_teacher_pass(study, files):
    study["prepare"]["datasets"] += [_text(), _text(name="prose_hf", tokenizer="tok", teacher={"hf": "teacher"})]
    check_params(study, files)


def test_a_hf_teacher_alone_needs_no_teacher_recipe(study, files):
    """A Hugging Face teacher is loaded, not trained: teacher.lm_recipe is only for trained ones."""
    study["prepare"]["datasets"] = [d for d in study["prepare"]["datasets"] if d["kind"] not in LM_KINDS]
    study["prepare"]["datasets"].append(_text(tokenizer="tok", teacher={"hf": "teacher"}))
    del study["teacher"]["lm_recipe"]
    check_params(study, files)
    study["prepare"]["datasets"].append(HMM)  # trained here (the default gpt teacher): now it is needed
    refused(study, files, "teacher.lm_recipe", "'hmm'")


def test_gpt_on_classification_data_only_is_fine(classification, files):
    params = copy.deepcopy(classification)
    params["distill"]["students"].append({"family": "gpt", "sizes": [8]})
    check_params(params, files)  # no LM data: no recipe, no token objectives needed
    assert without_language_models(params)["distill"]["students"] == classification["distill"]["students"]


def test_a_language_without_a_language_model_family_names_the_dataset(study, files):
    study["distill"]["students"] = [e for e in study["distill"]["students"] if e["family"] != "gpt"]
    refused(study, files, "distill.students", "'hmm'")


def test_a_missing_corpus_names_its_path(study, files):
    study["prepare"]["datasets"].append(_text(path="missing.txt"))
    index = len(study["prepare"]["datasets"]) - 1
    refused(study, files, f"prepare.datasets[{index}].path", "missing.txt")


def test_a_tokenizer_neither_bytes_nor_a_folder(study, files):
    study["prepare"]["datasets"].append(_text(tokenizer="no_such_tokenizer"))
    index = len(study["prepare"]["datasets"]) - 1
    refused(study, files, f"prepare.datasets[{index}].tokenizer", "no_such_tokenizer")
    (files / "a_file").write_text("x")  # a file is not a tokenizer folder either
    study["prepare"]["datasets"][index]["tokenizer"] = "a_file"
    refused(study, files, f"prepare.datasets[{index}].tokenizer", "a_file")


def test_a_missing_hf_teacher_folder(study, files):
    study["prepare"]["datasets"].append(_text(tokenizer="tok", teacher={"hf": "no_such_model"}))
    index = len(study["prepare"]["datasets"]) - 1
    message = refused(study, files, f"prepare.datasets[{index}].teacher.hf", "no_such_model")
    assert "tokenizer" not in message  # the tokenizer is fine: one problem, one message


def test_a_hf_teacher_with_byte_tokens(study, files):
    study["prepare"]["datasets"].append(_text(teacher={"hf": "teacher"}))
    index = len(study["prepare"]["datasets"]) - 1
    refused(study, files, f"prepare.datasets[{index}].teacher.hf", f"prepare.datasets[{index}].tokenizer", "bytes")


def test_a_classification_teacher_on_a_language(study, files):
    index = len(study["prepare"]["datasets"]) - 1
    study["prepare"]["datasets"][index]["teacher"] = {"family": "cifar", "size": "resnet8"}
    refused(study, files, f"prepare.datasets[{index}].teacher.family", "'cifar'")


def test_a_gpt_teacher_size_must_be_a_number(study, files):
    index = len(study["prepare"]["datasets"]) - 1
    study["prepare"]["datasets"][index]["teacher"] = {"family": "gpt", "size": "big"}
    refused(study, files, f"prepare.datasets[{index}].teacher.size", "'big'")


def test_a_classification_teacher_key_on_a_language(study, files):
    index = len(study["prepare"]["datasets"]) - 1
    study["prepare"]["datasets"][index]["teacher"] = {"family": "gpt", "size": 16, "logits": "t.npz"}
    refused(study, files, f"prepare.datasets[{index}].teacher", "logits")


def test_gpt_student_sizes_are_numbers(study, files):
    index = next(i for i, e in enumerate(study["distill"]["students"]) if e["family"] == "gpt")
    study["distill"]["students"][index]["sizes"] = [8, "wide"]
    refused(study, files, f"distill.students[{index}].sizes[1]", "'wide'")


@pytest.mark.parametrize("section", ["distill", "teacher"])
def test_a_missing_lm_recipe(study, files, section):
    del study[section]["lm_recipe"]
    refused(study, files, f"{section}.lm_recipe")


@pytest.mark.parametrize("section", ["distill", "teacher"])
def test_an_lm_recipe_with_augment(study, files, section):
    study[section]["lm_recipe"]["augment"] = {"hflip": True}
    refused(study, files, f"{section}.lm_recipe.augment")


def test_an_lm_recipe_is_checked_like_any_recipe(study, files):
    study["distill"]["lm_recipe"]["schedule"] = {"name": "multistep", "milestones": [5, 3]}
    refused(study, files, "distill.lm_recipe")


@pytest.mark.parametrize("key", ["datasets", "generation_datasets", "resample_datasets"])
def test_designs_naming_a_language(study, files, key):
    study["designs"][key] = [*(study["designs"].get(key) or []), "hmm"]
    index = len(study["designs"][key]) - 1
    refused(study, files, f"designs.{key}[{index}]", "'hmm'", "language-model data")


def test_schema_a_synthetic_language_needs_its_vocabulary(study, files):
    del study["prepare"]["datasets"][-1]["vocab"]
    refused(study, files, "prepare.datasets[", "'vocab' is a required property")


def test_schema_text_needs_its_block(study, files):
    study["prepare"]["datasets"].append({"name": "prose", "kind": "text", "path": "corpus.txt", "tokenizer": "bytes"})
    refused(study, files, "'block' is a required property")


def test_schema_unknown_sequence_source(study, files):
    study["distill"]["sequences"] = ["bogus"]
    refused(study, files, "distill.sequences[0]", "bogus")
    study["distill"]["sequences"] = ["data"]
    study["distill"]["token_objectives"]["fkl"]["sequences"] = ["data", "nope"]
    refused(study, files, "distill.token_objectives.fkl.sequences[1]", "nope")


@pytest.mark.parametrize("fraction", [0, 1.5, -0.5])
def test_schema_on_policy_fraction_in_0_1(study, files, fraction):
    study["distill"]["on_policy_fraction"] = [fraction]
    refused(study, files, "distill.on_policy_fraction[0]")


def test_schema_unknown_token_objective(study, files):
    study["distill"]["token_objectives"]["kl"] = {}
    refused(study, files, "distill.token_objectives", "kl")


# Known bug (reported to the lead): the schema's token_objective lists every hyper-parameter
# for every objective and lm_errors does not check which apply, so lm_grid.token_settings
# drops them silently: tvd {temperature: [1, 2]} runs one tvd cell, skl {temperature: [4]}
# runs at no temperature at all. strict: remove the mark once the check exists.
@pytest.mark.parametrize("name, hyper", [("tvd", "temperature"), ("fkl", "beta"), ("skl", "temperature")])
def test_a_hyper_parameter_the_objective_does_not_take(study, files, name, hyper):
    study["distill"]["token_objectives"][name] = {hyper: [0.5]}
    refused(study, files, f"distill.token_objectives.{name}", hyper)


# Known bug (reported to the lead): the classification lists refuse 1 and 1.0 (they name the
# same cell: params._distill_errors); the token objectives' lists and on_policy_fraction do
# not, and lm_cells then names the same cell twice. strict: remove the mark once refused.
@pytest.mark.parametrize("where", ["temperature", "lam", "on_policy_fraction"])
def test_a_value_twice_in_a_swept_list(study, files, where):
    if where == "on_policy_fraction":
        study["distill"]["on_policy_fraction"] = [0.5, 0.5]
        study["distill"]["sequences"] = ["student"]
        key = "distill.on_policy_fraction"
    elif where == "temperature":
        study["distill"]["token_objectives"]["fkl"] = {"temperature": [1, 1.0]}
        key = "distill.token_objectives.fkl.temperature"
    else:
        study["distill"]["token_objectives"]["skl"] = {"lam": [0.1, 0.10]}
        key = "distill.token_objectives.skl.lam"
    refused(study, files, key)


def test_dataset_students_by_modality(study, classification):
    study["prepare"]["datasets"].append({**HMM, "name": "hmm2"})
    assert [(e["family"], size) for e, size in dataset_students(study, "hmm")] == [("gpt", 8), ("gpt", 16)]
    assert [(e["family"], size) for e, size in dataset_students(study, "hmm2")] == [("gpt", 8), ("gpt", 16)]
    for spec in classification["prepare"]["datasets"]:
        pairs = dataset_students(study, spec["name"])
        assert pairs and {e["family"] for e, _ in pairs} <= {"mlp", "cnn"}
        assert pairs == dataset_students(classification, spec["name"])  # the gpt entry changes nothing there


def test_a_gpt_entry_listing_its_language(study, files):
    """A gpt entry restricted to one language trains there only; another language with no
    family is refused by name."""
    study["prepare"]["datasets"].append({**HMM, "name": "hmm2"})
    gpt = next(e for e in study["distill"]["students"] if e["family"] == "gpt")
    gpt["datasets"] = ["hmm"]
    assert dataset_students(study, "hmm2") == []
    refused(study, files, "'hmm2'")


def test_checking_params_never_imports_torch():
    """Snakemake checks params.yaml on every invocation: the language-model checks and cell
    names must not pull in torch (seconds per invocation; measured: 1.1 s of a 1.2 s import)."""
    import subprocess
    import sys

    code = "import sys, distillstudy.params, distillstudy.lm_grid; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
