"""Load and validate params.yaml: the schema first, then the checks a schema cannot say.

    distillstudy validate params.yaml

The same JSON schema (src/distillstudy/params.schema.yaml) is used by the
Snakefile's validate(); `check_params` adds the cross-field rules (duplicate
grid values after canonical formatting, CSV files that exist and hold the
label column, npz files and offline teacher logits whose arrays exist with matching
row counts). Every error names the key path and the offending value.
"""

from __future__ import annotations

import functools

import json
import zipfile
from pathlib import Path

import jsonschema
import yaml

from distillstudy.grid import (TUNING_KEYS, design_datasets, distill_alphas, distill_objectives, factory_file,
                               format_number)
from distillstudy.lm_params import lm_errors
from distillstudy.students import (BUILTIN_FAMILIES, IMAGE_KINDS, SELF_FAMILY, distill_students, is_factory,
                                   reference_family, without_language_models)
from distillstudy.engine_params import engine_errors
from distillstudy.userfiles import csv_errors, dataset_input_shape, image_folder_errors, known_shape, user_file_errors
from distillstudy.errors import ParamsError

#: Ships inside the package, so validation works outside a checkout too.
SCHEMA_PATH = Path(__file__).resolve().with_name("params.schema.yaml")


def key_path(path) -> str:
    """['distill', 'temperatures', 2] -> 'distill.temperatures[2]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


@functools.cache  # read once per process (Snakemake checks params several times per invocation)
def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _schema_errors(params: dict) -> list[str]:
    validator_cls = jsonschema.validators.validator_for(load_schema())
    validator = validator_cls(load_schema())
    messages = []
    for err in sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path))):
        where = key_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            for key in extra:
                messages.append(f"{key_path([*err.absolute_path, key])}: unknown key {key!r} "
                                f"(allowed here: {', '.join(allowed)})")
            continue
        messages.append(f"{where}: {json.dumps(err.instance, default=str)} is invalid: {err.message}")
    return messages


def _duplicate_errors(values, where: str, canon) -> list[str]:
    seen: dict[str, object] = {}
    messages = []
    for i, value in enumerate(values):
        key = canon(value)
        if key in seen:
            messages.append(f"{where}[{i}]: {value!r} duplicates {seen[key]!r} (both are {key})")
        seen.setdefault(key, value)
    return messages


def _distill_errors(distill: dict) -> list[str]:
    """distill.objectives or its shorthand (temperatures, logit_mse), never both; no value
    twice in any swept list (1 and 1.0 would name the same cell)."""
    messages = []
    if "objectives" in distill:
        for key in ("temperatures", "logit_mse"):
            if key in distill:
                messages.append(f"distill.{key}: give distill.objectives or the shorthand distill.temperatures "
                                f"(+ distill.logit_mse), not both")
        if not distill_objectives(distill):
            messages.append("distill.objectives: every objective is null (off); keep at least one")
        for name, hyper in distill_objectives(distill).items():
            for key, values in hyper.items():
                messages += _duplicate_errors(values, f"distill.objectives.{name}.{key}", format_number)
    elif "temperatures" not in distill:
        messages.append("distill: missing distill.objectives (e.g. objectives: {kd: {temperature: [1, 4]}}) "
                        "or its shorthand distill.temperatures")
    else:
        messages += _duplicate_errors(distill["temperatures"], "distill.temperatures", format_number)
    if isinstance(distill["alpha"], list):
        messages += _duplicate_errors(distill["alpha"], "distill.alpha", format_number)
    return messages


def _students_errors(params: dict, base: Path) -> list[str]:
    """distill.students: labels unique (they name paths and table rows), sizes unique per
    family, depth only for mlps, datasets that exist, every dataset with a student,
    factory files that exist (their functions are checked by engine.factories.check_students)."""
    distill = params["distill"]
    if "students" not in distill:
        return _duplicate_errors(distill["sizes"], "distill.sizes", int)
    names = [d["name"] for d in params["prepare"]["datasets"]]
    messages, labels, covered, cifar_students = [], {}, set(), set()
    for i, entry in enumerate(distill_students(distill)):
        where = f"distill.students[{i}]"
        messages += _duplicate_errors(entry["sizes"], f"{where}.sizes", str)
        # The zoo's entries may repeat the family (e.g. resnet8x4 on one dataset, wrn_16_2 on
        # another): their students' path names ("cifar-resnet8x4") stay apart per dataset.
        taken = {(d, size) for d in (entry["datasets"] or names) for size in entry["sizes"]}
        if entry["label"] in labels and (entry["family"] != "cifar" or taken & cifar_students):
            messages.append(f"{where}.family: {entry['family']!r} is named {entry['label']!r} in paths and tables, "
                            f"as distill.students[{labels[entry['label']]}] is: give one of them another "
                            f"{'depth' if entry['label'].startswith('mlp') else 'function name'}")
        labels.setdefault(entry["label"], i)
        cifar_students |= taken if entry["family"] == "cifar" else set()
        if entry["label"] == SELF_FAMILY:
            messages.append(f"{where}.family: a function named {SELF_FAMILY!r} would share its name with the "
                            "born-again generations' students (the teacher's own architecture); rename it")
        if "depth" in distill["students"][i] and entry["family"] != "mlp":
            messages.append(f"{where}.depth: only the mlp family has a depth ({entry['family']!r} has its own)")
        covered.update(entry["datasets"] or names)  # names the study lacks: _pick_errors
        if entry["family"] == "cnn":
            messages += _cnn_errors(where, entry, params, base)
        if is_factory(entry["family"]) and not (base / factory_file(entry["family"])).is_file():
            messages.append(f"{where}.family: factory file {factory_file(entry['family'])!r} does not exist "
                            f"(relative to {base.resolve()})")
    tune = distill.get("tune") or {}
    for key in TUNING_KEYS:
        messages += _duplicate_errors(tune.get(key, []), f"distill.tune.{key}", format_number)
    for name in names:
        if name not in covered:
            messages.append(f"distill.students: no family is trained on dataset {name!r} (list it in a family's "
                            f"datasets, or leave datasets out to train a family on every dataset)")
    return messages


def _cnn_errors(where: str, entry: dict, params: dict, base: Path) -> list[str]:
    """The built-in cnn convolves (length,), (H, W) or (C, H, W) inputs (engine/families.py)."""
    messages = []
    for spec in params["prepare"]["datasets"]:
        if entry["datasets"] is not None and spec["name"] not in entry["datasets"]:
            continue
        try:
            shape = dataset_input_shape(spec, base)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            continue  # the dataset's own entry reports its file
        if len(shape) not in (1, 2, 3):
            messages.append(f"{where}: the cnn family takes inputs shaped (length,), (H, W) or (C, H, W); "
                            f"dataset {spec['name']!r} has {shape} (list the family's datasets)")
    return messages


# ---- lists that pick datasets or families: "these, where the study has them" ------------
# A --configfile is merged into params.yaml key by key (Snakemake's update_config: mappings
# merged, lists replaced), so a study of your own keeps the default study's lists that pick
# datasets or families for a setting, and cannot remove a key. Each such list applies to the
# names the study has; a built-in name it lacks (a dataset kind such as mnist1d, a built-in
# family such as mlp: how the default study names its datasets and students) is skipped,
# with a note (skipped_names); any other unknown name is refused as a typo.

def dataset_kinds() -> list[str]:
    """Every prepare.datasets kind the schema knows (mnist1d, digits, sine, csv, ...)."""
    kinds: set[str] = set()

    def walk(node):  # every `kind` property's enum or const, wherever the schema spells one
        children = node if isinstance(node, list) else []
        if isinstance(node, dict):
            properties = node.get("properties")
            kind = properties.get("kind") if isinstance(properties, dict) else None
            if isinstance(kind, dict):
                kinds.update([*kind.get("enum", []), *([kind["const"]] if "const" in kind else [])])
            children = list(node.values())
        for child in children:
            walk(child)

    walk(load_schema()["properties"]["prepare"]["properties"]["datasets"])
    return sorted(kinds)


def _picks(params: dict) -> list[tuple[str, list, str, list, tuple]]:
    """(key, its names, what a name must be, the study's names, the built-in names)."""
    distill, designs = params["distill"], params["designs"]
    datasets = ("a dataset of prepare.datasets", [d["name"] for d in params["prepare"]["datasets"]],
                tuple(dataset_kinds()))
    families = ("a family of distill.students", [e["label"] for e in distill_students(distill)], BUILTIN_FAMILIES)
    tune = distill.get("tune") or {}
    picks = [(f"distill.students[{i}].datasets", e.get("datasets") or [], *datasets)
             for i, e in enumerate(distill.get("students") or [])]
    picks += [("distill.tune.datasets", tune.get("datasets") or [], *datasets),
              ("distill.tune.families", tune.get("families") or [], *families),
              ("designs.datasets", designs["datasets"], *datasets),
              ("designs.generation_datasets", designs.get("generation_datasets") or [], *datasets),
              ("designs.resample_datasets", designs.get("resample_datasets") or [], *datasets)]
    return picks


def _pick_errors(params: dict) -> list[str]:
    messages = []
    for key, values, what, known, builtin in _picks(params):
        for j, name in enumerate(values):
            if name not in known and name not in builtin:
                messages.append(f"{key}[{j}]: {name!r} is not {what} ({', '.join(known)}) nor a built-in "
                                f"name a study may leave out ({', '.join(builtin)}): a typo?")
    return messages


def skipped_names(params: dict) -> list[str]:
    """One note per list that names built-in datasets or families the study lacks: they are
    skipped (check_params refuses the other unknown names). [] for the default study."""
    notes = []
    for key, values, what, known, _ in _picks(params):
        absent = [name for name in values if name not in known]
        if absent:
            notes.append(f"{key}: {', '.join(absent)} skipped (not {what}: this study leaves "
                         f"{'it' if len(absent) == 1 else 'them'} out)")
    return notes


def _designs_errors(params: dict) -> list[str]:
    """The axes must name student sizes (and alphas) the main grid has: each axis's
    reference level is read from the main grid's cells. Checked where a design applies
    (grid.design_datasets: the designs' datasets this study has), so a --configfile's
    own study is not held to the default study's sizes."""
    designs = params["designs"]
    family = reference_family(params)
    sizes = family["sizes"]
    messages = []
    for axis in ("epochs", "teacher_width", "ensemble", "label_fraction"):
        messages += _duplicate_errors(designs[axis], f"designs.{axis}", format_number)
    if designs.get("resamples") == 1:
        messages.append("designs.resamples: 1 cannot give a variance across training sets; use 0 (off) or at least 2")
    applied = design_datasets(params)
    if not applied:
        return messages  # no design runs here: the sizes and alphas below name nothing
    own = {d["name"]: (i, "logits" if "logits" in d["teacher"] else "factory")
           for i, d in enumerate(params["prepare"]["datasets"]) if "teacher" in d}
    for i, name in enumerate(designs["datasets"]):
        if name in own:
            j, key = own[name]
            what = ("an offline teacher" if key == "logits" else "a factory teacher") + \
                f" (prepare.datasets[{j}].teacher.{key})"
            if key == "factory" and "weights" not in params["prepare"]["datasets"][j]["teacher"]:
                continue  # trained here: the designs rebuild and retrain it from the factory
            if key == "factory":
                what, why = (f"a factory teacher with weights trained elsewhere (prepare.datasets[{j}].teacher."
                             f"weights)", "the study designs retrain teachers of its kind here, with this "
                             "pipeline's optimiser: a second change beside each axis's own")
            else:
                why = "the study designs retrain or re-run the teacher, so they do not apply to it"
            messages.append(f"designs.datasets[{i}]: {name!r} has {what}; {why}")
    for i, size in enumerate(designs["sizes"]):
        if int(size) not in sizes:
            which = ("distill.sizes" if "sizes" in params["distill"] else
                     f"the sizes of the reference family {family['label']!r}, the first of distill.students")
            messages.append(f"designs.sizes[{i}]: {size} is not one of {which} ({', '.join(map(str, sizes))})")
    for i, name in enumerate(designs["datasets"]):
        if name in applied and family["datasets"] is not None and name not in family["datasets"]:
            messages.append(f"designs.datasets[{i}]: {name!r} is not a dataset of the reference family "
                            f"{family['label']!r} (its datasets: {', '.join(family['datasets'])}); the designs "
                            f"train its students")
    if not designs["sizes"]:
        messages.append("designs.sizes: [] is invalid: designs.datasets names datasets, so the axes "
                        "need at least one student size")
    alphas = [format_number(a) for a in distill_alphas(params["distill"])]
    for i, alpha in enumerate(designs.get("alpha", [])):
        if format_number(alpha) not in alphas:
            messages.append(f"designs.alpha[{i}]: {alpha} is not one of distill.alpha ({', '.join(alphas)})")
    if "kd" not in distill_objectives(params["distill"]):
        messages.append("designs.datasets: the study designs train KD students at each kd temperature, "
                        "but distill.objectives has no kd entry (add one, or set designs.datasets: [])")
    return messages


def check_params(params: dict, base: str | Path = ".") -> None:
    """Raise ParamsError listing every problem; return None when the params are usable."""
    if not isinstance(params, dict):
        raise ParamsError(f"params must be a mapping of sections, got {type(params).__name__}")
    messages = _schema_errors(params)
    if not messages:
        messages += lm_errors(params, base)
        # The classification checks below see the study without its language models (each
        # modality checks its own datasets and families: lm_params).
        params = without_language_models(params)
        datasets = params["prepare"]["datasets"]
        messages += _duplicate_errors([d["name"] for d in datasets], "prepare.datasets.name", str)
        messages += _distill_errors(params["distill"])
        students = [k for k in ("students", "sizes") if k in params["distill"]]
        if len(students) != 1:
            messages.append("distill: give distill.students (the student families, e.g. students: [{family: mlp, "
                            "sizes: [16, 64]}]) or its shorthand distill.sizes, " +
                            ("not both (a --configfile that gives distill.sizes over a params.yaml with "
                             "distill.students: give distill.students there too)" if students else "one of them"))
            return _raise(messages)
        messages += _students_errors(params, Path(base))
        messages += _pick_errors(params)
        messages += _duplicate_errors(params["walkthrough"]["n_train"], "walkthrough.n_train", int)
        for i, spec in enumerate(datasets):
            if spec["kind"] == "csv":
                messages += csv_errors(i, spec, Path(base))
            if spec["kind"] == "npz" or "teacher" in spec:  # files named in the dataset's entry
                messages += user_file_errors(i, spec, Path(base))
            if spec["kind"] in IMAGE_KINDS:
                messages += image_folder_errors(i, spec, Path(base))
        messages += _designs_errors(params)
        messages += engine_errors(params, lambda spec: known_shape(spec, Path(base)))
    _raise(messages)


def _raise(messages: list[str]) -> None:
    if messages:
        raise ParamsError("invalid params:\n  " + "\n  ".join(messages))


def load_params(path: str | Path) -> dict:
    """Read a params file and validate it; relative CSV paths resolve from the cwd."""
    try:
        with open(path, encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ParamsError(f"params file {str(path)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file {str(path)!r} is not valid YAML: {exc}") from None
    check_params(params)
    return params
