"""Load and validate params.yaml: the schema first, then the checks a schema cannot say.

    distillstudy validate params.yaml

The same JSON schema (src/distillstudy/params.schema.yaml) is used by the
Snakefile's validate(); `check_params` adds the cross-field rules (duplicate
grid values after canonical formatting, CSV files that exist and hold the
label column, npz files and offline teacher logits whose arrays exist with matching
row counts). Every error names the key path and the offending value.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from distillstudy.grid import TUNING_KEYS, distill_alphas, distill_objectives, factory_file, format_number
from distillstudy.students import SELF_FAMILY, distill_students, is_factory, reference_family
from distillstudy.errors import ParamsError

#: Ships inside the package, so validation works outside a checkout too.
SCHEMA_PATH = Path(__file__).resolve().with_name("params.schema.yaml")


def key_path(path) -> str:
    """['distill', 'temperatures', 2] -> 'distill.temperatures[2]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


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


def _csv_errors(i: int, spec: dict, base: Path) -> list[str]:
    where = f"prepare.datasets[{i}]"
    path = base / spec["path"]
    if not path.is_file():
        return [f"{where}.path: {spec['path']!r} does not exist (relative to {base})"]
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{where}.path: {spec['path']!r} cannot be read as CSV: {exc}"]
    header = [h.strip() for h in header]
    if spec["label"] not in header:
        return [f"{where}.label: {spec['label']!r} is not a column of {spec['path']} "
                f"(columns: {', '.join(header) or 'none'})"]
    return []


def npz_shapes(path: Path) -> dict[str, tuple]:
    """{array name: shape} of an npz, read from the arrays' headers only (no data)."""
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                if version not in read_header:
                    raise ValueError(f"array {member}: npy format version {version} is not supported")
                shape, _, _ = read_header[version](handle)
            shapes[member.removesuffix(".npy")] = shape
    return shapes


#: The per-example input shape of the built-in datasets (a csv table's is (columns - 1,),
#: an npz's is its x's): what student families are built and checked for.
BUILTIN_SHAPES = {"mnist1d": (40,), "digits": (8, 8), "sine": (1,)}


def dataset_input_shape(spec: dict, base: str | Path = ".") -> tuple[int, ...]:
    """One example's shape for a prepare.datasets entry, without preparing it: the
    built-in kinds' known shapes, a csv's feature count (its header), an npz's x."""
    if spec["kind"] in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[spec["kind"]]
    path = Path(base) / spec["path"]
    if spec["kind"] == "npz":
        return tuple(int(d) for d in npz_shapes(path)["x"][1:])
    with open(path, newline="", encoding="utf-8") as fh:
        return (len(next(csv.reader(fh), [])) - 1,)


def _rows(shape: tuple) -> int:
    return int(shape[0]) if shape else 0


def _user_file_errors(i: int, spec: dict, base: Path) -> list[str]:
    """An npz dataset's arrays and an offline teacher's logits, by name and shape (their
    values are checked when the prepare stage reads them, naming the row)."""
    where = f"prepare.datasets[{i}]"
    messages, shapes = [], {}
    teacher = spec.get("teacher", {})
    if "logits" in teacher and ("factory" in teacher or "weights" in teacher):
        messages.append(f"{where}.teacher: give either logits (an offline teacher) or factory (your module, "
                        "with or without weights), not both")
    if "weights" in teacher and "factory" not in teacher:
        messages.append(f"{where}.teacher.weights: weights need the factory that builds their module "
                        f"({where}.teacher.factory)")
    if "logits" in teacher and spec["kind"] not in ("csv", "npz"):
        messages.append(f"{where}.teacher.logits: an offline teacher's logits need rows to align with; only csv "
                        f"and npz datasets take them, not kind {spec['kind']!r}")
    for key in ("factory", "weights"):  # your teacher's code and weights: loaded by the teacher stage
        if key in teacher:
            name = factory_file(teacher[key]) if key == "factory" else teacher[key]
            if not (base / name).is_file():
                messages.append(f"{where}.teacher.{key}: {name!r} does not exist (relative to {base})")
    files = ([("path", spec["path"])] if spec["kind"] == "npz" else []) + (
        [("teacher.logits", teacher["logits"])] if "logits" in teacher else [])
    for key, name in files:
        path = base / name
        if not path.is_file():
            messages.append(f"{where}.{key}: {name!r} does not exist (relative to {base})")
            continue
        try:
            shapes[key] = npz_shapes(path)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            messages.append(f"{where}.{key}: {name!r} is not a readable npz file ({exc})")
    data = shapes.get("path")
    if data is not None:
        missing = [k for k in ("x", "y") if k not in data]
        if missing:
            messages.append(f"{where}.path: {spec['path']!r} needs arrays x and y; missing {', '.join(missing)}")
        elif _rows(data["y"]) != _rows(data["x"]):
            messages.append(f"{where}.path: {spec['path']!r}: y has {_rows(data['y'])} rows, x {_rows(data['x'])}")
        if ("x_test" in data) != ("y_test" in data):
            messages.append(f"{where}.path: {spec['path']!r}: x_test and y_test go together")
    logits = shapes.get("teacher.logits")
    if logits is not None:
        wanted = ["logits"] + (["logits_test"] if data is not None and "x_test" in data else [])
        for key in wanted:
            if key not in logits:
                messages.append(f"{where}.teacher.logits: {spec['teacher']['logits']!r} needs an array {key!r}"
                                f" (found {', '.join(sorted(logits)) or 'none'})")
        if data is not None and "logits" in logits and "x" in data and _rows(logits["logits"]) != _rows(data["x"]):
            messages.append(f"{where}.teacher.logits: `logits` has {_rows(logits['logits'])} rows, the data "
                            f"{_rows(data['x'])}: one row per example, in the data's order")
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
        for name, hyper in distill["objectives"].items():
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
    messages, labels, covered = [], {}, set()
    for i, entry in enumerate(distill_students(distill)):
        where = f"distill.students[{i}]"
        messages += _duplicate_errors(entry["sizes"], f"{where}.sizes", int)
        if entry["label"] in labels:
            messages.append(f"{where}.family: {entry['family']!r} is named {entry['label']!r} in paths and tables, "
                            f"as distill.students[{labels[entry['label']]}] is: give one of them another "
                            f"{'depth' if entry['label'].startswith('mlp') else 'function name'}")
        labels.setdefault(entry["label"], i)
        if entry["label"] == SELF_FAMILY:
            messages.append(f"{where}.family: a function named {SELF_FAMILY!r} would share its name with the "
                            "born-again generations' students (the teacher's own architecture); rename it")
        if "depth" in distill["students"][i] and entry["family"] != "mlp":
            messages.append(f"{where}.depth: only the mlp family has a depth ({entry['family']!r} has its own)")
        for j, name in enumerate(entry["datasets"] or []):
            if name not in names:
                messages.append(f"{where}.datasets[{j}]: {name!r} is not a dataset of prepare.datasets "
                                f"(names: {', '.join(names)})")
        covered.update(entry["datasets"] or names)
        if entry["family"] == "cnn":
            messages += _cnn_errors(where, entry, params, base)
        if is_factory(entry["family"]) and not (base / factory_file(entry["family"])).is_file():
            messages.append(f"{where}.family: factory file {factory_file(entry['family'])!r} does not exist "
                            f"(relative to {base.resolve()})")
    tune = distill.get("tune") or {}
    for j, name in enumerate(tune.get("datasets") or []):
        if name not in names:
            messages.append(f"distill.tune.datasets[{j}]: {name!r} is not a dataset of prepare.datasets "
                            f"(names: {', '.join(names)})")
    for j, label in enumerate(tune.get("families") or []):
        if label not in labels:
            messages.append(f"distill.tune.families[{j}]: {label!r} is not a family of distill.students "
                            f"(labels: {', '.join(labels)})")
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


def _designs_errors(params: dict) -> list[str]:
    """The axes must name datasets and student sizes the main grid has: each axis's
    reference level is read from the main grid's cells."""
    designs = params["designs"]
    names = [d["name"] for d in params["prepare"]["datasets"]]
    family = reference_family(params)
    sizes = family["sizes"]
    messages = []
    for i, name in enumerate(designs["datasets"]):
        if name not in names:
            messages.append(f"designs.datasets[{i}]: {name!r} is not a dataset of prepare.datasets "
                            f"(names: {', '.join(names)})")
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
        if family["datasets"] is not None and name not in family["datasets"]:
            messages.append(f"designs.datasets[{i}]: {name!r} is not a dataset of the reference family "
                            f"{family['label']!r} (its datasets: {', '.join(family['datasets'])}); the designs "
                            f"train its students")
    if designs["datasets"] and not designs["sizes"]:
        messages.append("designs.sizes: [] is invalid: designs.datasets names datasets, so the axes "
                        "need at least one student size")
    for axis in ("epochs", "teacher_width", "ensemble", "label_fraction"):
        messages += _duplicate_errors(designs[axis], f"designs.{axis}", format_number)
    if designs.get("resamples") == 1:
        messages.append("designs.resamples: 1 cannot give a variance across training sets; use 0 (off) or at least 2")
    alphas = [format_number(a) for a in distill_alphas(params["distill"])]
    for i, alpha in enumerate(designs.get("alpha", [])):
        if format_number(alpha) not in alphas:
            messages.append(f"designs.alpha[{i}]: {alpha} is not one of distill.alpha ({', '.join(alphas)})")
    if designs["datasets"] and "kd" not in distill_objectives(params["distill"]):
        messages.append("designs.datasets: the study designs train KD students at each kd temperature, "
                        "but distill.objectives has no kd entry (add one, or set designs.datasets: [])")
    return messages


def check_params(params: dict, base: str | Path = ".") -> None:
    """Raise ParamsError listing every problem; return None when the params are usable."""
    if not isinstance(params, dict):
        raise ParamsError(f"params must be a mapping of sections, got {type(params).__name__}")
    messages = _schema_errors(params)
    if not messages:
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
        messages += _duplicate_errors(params["walkthrough"]["n_train"], "walkthrough.n_train", int)
        for i, spec in enumerate(datasets):
            if spec["kind"] == "csv":
                messages += _csv_errors(i, spec, Path(base))
            if spec["kind"] == "npz" or "teacher" in spec:  # files named in the dataset's entry
                messages += _user_file_errors(i, spec, Path(base))
        messages += _designs_errors(params)
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
