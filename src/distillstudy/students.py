"""Student families: the vocabulary of params.yaml's distill.students, spelled once.

A family is "mlp" (depth hidden layers, default 2), "cnn" (engine/families.py) or your
factory "<file>.py:<function>" with f(input_shape, n_classes, size) -> torch.nn.Module.
Its label names it in paths, tables and results.csv's `family` column; a student is one
(family, size), its path segment `student_name(label, size)`: "h16" for today's mlp,
"cnn-8", "mlp3-64", "tiny_cnn-4" otherwise.
"""

from __future__ import annotations

import re

#: Built-in student families (engine/families.py); any other family is your factory
#: "<file>.py:<function>" with f(input_shape, n_classes, size) -> torch.nn.Module.
BUILTIN_FAMILIES = ("mlp", "cnn")
#: The born-again generations' students (grid.GENERATIONS): the teacher's own architecture,
#: built as the teacher is; not a distill.students family (the schema refuses the name).
SELF_FAMILY = "teacher"
#: Hidden layers of an `mlp` entry without `depth` (today's students: in -> H -> H -> classes).
DEFAULT_DEPTH = 2
#: What a family's size counts, in tables and figures (a factory's size: "size").
SIZE_NOUNS = {"mlp": "hidden width", "cnn": "channels", SELF_FAMILY: "width ×"}
#: Snakemake wildcard pattern of a student's path segment (student_name).
STUDENT_PATTERN = r"h[0-9]+|[A-Za-z_][A-Za-z0-9_]*-[0-9]+"
_STUDENT_RE = re.compile(r"h(?P<size>[0-9]+)|(?P<label>[A-Za-z_][A-Za-z0-9_]*)-(?P<lsize>[0-9]+)")


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
FAMILY_TITLES = {"mlp": "MLP", "cnn": "CNN", SELF_FAMILY: "Teacher-architecture"}


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
        entry = {**entry, "sizes": [int(s) for s in entry["sizes"]], "datasets": entry.get("datasets")}
        if entry["family"] == "mlp":
            entry["depth"] = int(entry.get("depth", DEFAULT_DEPTH))
        out.append({**entry, "label": family_label(entry)})
    return out


def student_name(label: str, size: int) -> str:
    """A student's path segment and metrics.json key: "h16" for today's mlp (paths of
    existing studies keep their names), "<label>-<size>" otherwise ("cnn-8", "mlp3-64")."""
    return f"h{int(size)}" if label == "mlp" else f"{label}-{int(size)}"


def parse_student(name: str) -> tuple[str, int]:
    """'h16' -> ('mlp', 16); 'cnn-8' -> ('cnn', 8)."""
    match = _STUDENT_RE.fullmatch(name)
    if not match:
        raise ValueError(f"student {name!r} is not 'h<size>' or '<family>-<size>'")
    return ("mlp", int(match["size"])) if match["size"] else (match["label"], int(match["lsize"]))


def dataset_students(params: dict, dataset: str) -> list[tuple[dict, int]]:
    """(family entry, size) of every student trained on `dataset`, in params order."""
    return [(entry, size) for entry in distill_students(params["distill"])
            if entry["datasets"] is None or dataset in entry["datasets"] for size in entry["sizes"]]


def reference_family(params: dict) -> dict:
    """The first entry of distill.students: the family whose students the designs train."""
    return distill_students(params["distill"])[0]
