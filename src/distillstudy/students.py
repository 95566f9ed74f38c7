"""Student families: the vocabulary of params.yaml's distill.students, spelled once.

A family is "mlp" (depth hidden layers, default 2), "cnn" (engine/families.py), "cifar"
(the CIFAR KD benchmarks' zoo, engine/zoo/: size = a model name such as "resnet8x4") or
your factory "<file>.py:<function>" with f(input_shape, n_classes, size) -> torch.nn.Module.
Its label names it in paths, tables and results.csv's `family` column; a student is one
(family, size), its path segment `student_name(label, size)`: "h16" for today's mlp,
"cnn-8", "mlp3-64", "tiny_cnn-4", "cifar-resnet8x4" otherwise.

Each family trains on one of two engines (`engine: auto | stacked | standard`): the stacked
engines train all seeds of a cell in one process (small models on CPU); the standard engine
trains any nn.Module one replicate per job with autograd and torch.optim (distill.recipe).
"""

from __future__ import annotations

import re

#: Built-in student families (engine/families.py); any other family is your factory
#: "<file>.py:<function>" with f(input_shape, n_classes, size) -> torch.nn.Module.
BUILTIN_FAMILIES = ("mlp", "cnn", "cifar", "gpt")
#: Dataset kinds of token sequences (engine/lm_data.py): trained by the language-model path
#: (stages/distill_lm.py), with token objectives, never by the classification engines.
LM_KINDS = ("synthetic_lm", "text")
#: Built-in families of language models (engine/gpt.py: size = width); a factory is one where
#: its entry lists language-model datasets (f(vocab_size, block, size) -> nn.Module).
LM_FAMILIES = ("gpt",)
#: The cifar family's sizes: the model names of the CIFAR KD benchmarks (RepDistiller,
#: mdistiller), built by engine/zoo.
ZOO_SIZES = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
             "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16",
             "vgg19", "mobilenetv2", "shufflev1", "shufflev2")
#: The engines a family may name (distill.students[*].engine), and the two that train.
ENGINES = ("auto", "stacked", "standard")
STACKED, STANDARD = "stacked", "standard"
#: Dataset kinds stored as images (uint8, (n, C, H, W)): trained by the standard engine only.
IMAGE_KINDS = ("cifar10", "cifar100", "imagefolder")
#: The born-again generations' students (grid.GENERATIONS): the teacher's own architecture,
#: built as the teacher is; not a distill.students family (the schema refuses the name).
SELF_FAMILY = "teacher"
#: Hidden layers of an `mlp` entry without `depth` (today's students: in -> H -> H -> classes).
DEFAULT_DEPTH = 2
#: What a family's size counts, in tables and figures (a factory's size: "size").
SIZE_NOUNS = {"mlp": "hidden width", "cnn": "channels", "cifar": "model", "gpt": "width", SELF_FAMILY: "width ×"}
#: Snakemake wildcard pattern of a student's path segment (student_name).
STUDENT_PATTERN = r"h[0-9]+|[A-Za-z_][A-Za-z0-9_]*-[A-Za-z0-9_]+"
_STUDENT_RE = re.compile(r"h(?P<size>[0-9]+)|(?P<label>[A-Za-z_][A-Za-z0-9_]*)-(?P<lsize>[A-Za-z0-9_]+)")


def is_factory(family: str) -> bool:
    return family not in (*BUILTIN_FAMILIES, SELF_FAMILY)


def family_label(entry: dict) -> str:
    """A family's name in paths, tables and results.csv's `family` column: "mlp" (depth 2),
    "mlp3" (an mlp of depth 3), "cnn", or your factory's function name."""
    family = entry["family"]
    if family == "mlp":
        depth = int(entry.get("depth", DEFAULT_DEPTH))
        return "mlp" if depth == DEFAULT_DEPTH else f"mlp{depth}"
    return family if family in (*BUILTIN_FAMILIES, SELF_FAMILY) else family.rsplit(":", 1)[1].strip()


#: How the report names a built-in family's students ("MLP students (hidden width 16)").
FAMILY_TITLES = {"mlp": "MLP", "cnn": "CNN", "cifar": "CIFAR-zoo", "gpt": "GPT", SELF_FAMILY: "Teacher-architecture"}


def family_title(label: str) -> str:
    """'MLP students', 'MLP students with 3 hidden layers', 'CNN students', 'tiny_cnn students'."""
    depth = re.fullmatch(r"mlp([0-9]+)", label)
    if depth:
        return f"MLP students with {depth[1]} hidden layers"
    return f"{FAMILY_TITLES.get(label, label)} students"


def family_noun(label: str) -> str:
    """'hidden width' (any mlp), 'channels' (cnn), 'size' (a factory)."""
    return SIZE_NOUNS.get("mlp" if re.fullmatch(r"mlp[0-9]*", label) else label, "size")


def distill_students(distill: dict) -> list[dict]:
    """distill.students, or its shorthand distill.sizes (= [{family: mlp, depth: 2, sizes}]),
    each entry with its `label` (family_label), `depth` for mlps and `datasets` (None: all).
    The first entry is the reference family: the study designs train its students."""
    entries = distill.get("students") or [{"family": "mlp", "sizes": distill["sizes"]}]
    out = []
    for entry in entries:
        entry = {**entry, "sizes": [size_value(s) for s in entry["sizes"]], "datasets": entry.get("datasets"),
                 "engine": entry.get("engine", "auto")}
        if entry["family"] == "mlp":
            entry["depth"] = int(entry.get("depth", DEFAULT_DEPTH))
        out.append({**entry, "label": family_label(entry)})
    return out


def size_value(size) -> int | str:
    """A size as params give it: a number (widths, channels) or a zoo model's name."""
    return size if isinstance(size, str) and not size.isdigit() else int(size)


# The one vocabulary of sizes in tables, figures and sentences. It lives beside size_value,
# not in spelling.py: distill_students and student_name need size_value, and the layers
# contract keeps students and spelling independent of each other.
def size_order(size) -> tuple:
    """Sort key of sizes: numbers first, in numeric order, then names alphabetically
    (8 < 16 < "resnet32x4" < "resnet8x4" < "wrn_16_2"), the order in which pandas sorts a
    column that holds both."""
    value = size_value(size)
    return (1, 0, value) if isinstance(value, str) else (0, value, "")


def size_text(noun: str, size) -> str:
    """A student's size in a label or sentence: 'hidden width 16', 'channels 8'; a zoo
    model's name stands alone ('resnet8x4'), since it names the student by itself."""
    value = size_value(size)
    return value if isinstance(value, str) else f"{noun} {value}"


def student_name(label: str, size: int | str) -> str:
    """A student's path segment and metrics.json key: "h16" for today's mlp (paths of
    existing studies keep their names), "<label>-<size>" otherwise ("cnn-8", "mlp3-64",
    "cifar-resnet8x4")."""
    return f"h{int(size)}" if label == "mlp" else f"{label}-{size_value(size)}"


def parse_student(name: str) -> tuple[str, int | str]:
    """'h16' -> ('mlp', 16); 'cnn-8' -> ('cnn', 8); 'cifar-resnet8x4' -> ('cifar', 'resnet8x4')."""
    match = _STUDENT_RE.fullmatch(name)
    if not match:
        raise ValueError(f"student {name!r} is not 'h<size>' or '<family>-<size>'")
    return ("mlp", int(match["size"])) if match["size"] else (match["label"], size_value(match["lsize"]))


def builtin_engine(entry: dict, dataset_kind: str) -> str | None:
    """The engine that trains a distill.students entry on a dataset of `dataset_kind`, where
    the names alone decide it: `standard` for the cifar zoo, for image datasets and where
    the entry asks for it; `stacked` for mlp and cnn on feature data (engine: auto or
    stacked); None for your factory under `auto` (decided by building it:
    engine.factories.family_engine) or one that asks for `stacked`."""
    if entry.get("engine", "auto") == STANDARD or entry["family"] == "cifar" or dataset_kind in IMAGE_KINDS:
        return STANDARD
    return STACKED if entry["family"] in ("mlp", "cnn") else None


def fits(entry: dict, spec: dict, params: dict) -> bool:
    """Whether a family trains on a dataset of its modality: language models on token
    sequences, the classification families on everything else."""
    if spec["kind"] in LM_KINDS:
        return entry["family"] in LM_FAMILIES or (is_factory(entry["family"]) and bool(entry.get("datasets")))
    if entry["family"] in LM_FAMILIES:
        return False
    kinds = {d["name"]: d["kind"] for d in params["prepare"]["datasets"]}
    return not (is_factory(entry["family"]) and entry.get("datasets")
                and all(kinds.get(name) in LM_KINDS for name in entry["datasets"]))


def dataset_students(params: dict, dataset: str) -> list[tuple[dict, int]]:
    """(family entry, size) of every student trained on `dataset`, in params order: the
    entries of its modality (fits) that list it or list no datasets."""
    spec = next(d for d in params["prepare"]["datasets"] if d["name"] == dataset)
    return [(entry, size) for entry in distill_students(params["distill"])
            if (entry["datasets"] is None or dataset in entry["datasets"]) and fits(entry, spec, params)
            for size in entry["sizes"]]


def without_language_models(params: dict) -> dict:
    """params as the classification pipeline sees them: no language-model datasets, no
    language-model families (each path checks and trains its own)."""
    datasets = [d for d in params["prepare"]["datasets"] if d["kind"] not in LM_KINDS]
    lm_names = {d["name"] for d in params["prepare"]["datasets"] if d["kind"] in LM_KINDS}
    distill = dict(params["distill"])
    if "students" in distill:
        distill["students"] = [e for e in distill["students"] if e["family"] not in LM_FAMILIES and not (
            is_factory(e["family"]) and e.get("datasets") and set(e["datasets"]) <= lm_names)] or distill["students"]
    return {**params, "prepare": {**params["prepare"], "datasets": datasets}, "distill": distill}


def reference_family(params: dict) -> dict:
    """The first entry of distill.students: the family whose students the designs train."""
    return distill_students(params["distill"])[0]


def standard_teacher(dataset: dict) -> bool:
    """Whether the standard engine trains (or loads) a prepare.datasets entry's teacher, with
    teacher.recipe: a zoo teacher ({family: cifar, size}), or any teacher of image data."""
    return dataset.get("teacher", {}).get("family") == "cifar" or dataset["kind"] in IMAGE_KINDS
