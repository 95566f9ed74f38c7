# Shared definitions: the grid from params.yaml, paths, and the checks a schema cannot do.
import json
import os
import shlex
import sys

from distillstudy.errors import ParamsError
from distillstudy.params import check_params

# Code inputs of each rule: the import closure of its stage module (workflow/codedeps.py).
sys.path.insert(0, workflow.basedir)
from codedeps import stage_code
from distillstudy.grid import (
    CELL_PATTERN,
    CONSISTENT,
    GENERATIONS,
    SELF_STUDENT,
    generation_plan,
    FIGURE_TITLES,
    NEEDS_TRANSFER_SET,
    TUNING_KEYS,
    VARIANT_PATTERN,
    dataset_variants,
    design_temperature_cells,
    factory_file,
    parse_variant,
    study_cells,
    tuned,
    variant_cells,
    variant_dir,
    variant_epochs,
    variant_settings,
)
from distillstudy.students import (
    STUDENT_PATTERN,
    dataset_students,
    distill_students,
    is_factory,
    parse_student,
    reference_family,
    student_name,
)

# Stage commands run the `distillstudy` of the Python that runs Snakemake.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
# One BLAS/OpenMP thread per job; jobs run in parallel instead (see README: Reproducibility).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    check_params(config)
    if any(is_factory(entry["family"]) for entry in distill_students(config["distill"])):
        # Your student factories, built and run on one batch per dataset before any job
        # (imports torch, so only when a study has them).
        from distillstudy.engine.factories import check_students

        check_students(config)
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None

DATASETS = {d["name"]: d for d in config["prepare"]["datasets"]}
# Per dataset, its students' path names ("h16", "cnn-8"; students.student_name) and the
# family entry behind each name.
STUDENTS = {
    name: {student_name(entry["label"], size): entry for entry, size in dataset_students(config, name)}
    for name in DATASETS
}
# baseline + every objective setting at every alpha (grid.study_cells); the designs'
# variants train KD at each temperature (grid.design_temperature_cells).
CELLS = study_cells(config)
DESIGN_TEMPERATURE_CELLS = design_temperature_cells(config)
WALKTHROUGH = bool(config["walkthrough"]["enabled"])
# Study designs: per dataset, its non-reference variants (src/distillstudy/grid.py).
VARIANTS = {name: dataset_variants(config, spec) for name, spec in DATASETS.items()}
# The designs train the reference family's students (the first of distill.students).
DESIGN_STUDENTS = [student_name(reference_family(config)["label"], s) for s in config["designs"]["sizes"]]


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    student=STUDENT_PATTERN,
    cell=CELL_PATTERN,
    # "" for the reference grid, "<variant>/" for a study-design variant.
    variant=rf"(?:{VARIANT_PATTERN}/)?",
    design=VARIANT_PATTERN,


def user_files(wildcards):
    """A dataset's own files the prepare stage reads: its table or arrays, an offline teacher's logits."""
    spec = DATASETS[wildcards.dataset]
    files = [spec["path"]] if spec["kind"] in ("csv", "npz") else []
    logits = spec.get("teacher", {}).get("logits")
    return files + ([logits] if logits else [])


def teacher_files(wildcards):
    """Your teacher's code and weights (prepare.datasets[*].teacher.factory / .weights)."""
    teacher = DATASETS[wildcards.dataset].get("teacher", {})
    files = [factory_file(teacher["factory"])] if "factory" in teacher else []
    return files + ([teacher["weights"]] if "weights" in teacher else [])


def teacher_args(wildcards):
    teacher = DATASETS[wildcards.dataset].get("teacher", {})
    args = f"--factory {shlex.quote(teacher['factory'])}" if "factory" in teacher else ""
    return args + (f" --weights {shlex.quote(teacher['weights'])}" if "weights" in teacher else "")


def dataset_args(wildcards):
    """The kind-specific options of one dataset, exactly as params.yaml gives them."""
    spec = DATASETS[wildcards.dataset]
    args = ""
    if spec["kind"] == "sine":
        args = f"--n-train {spec['n_train']} --n-test {spec['n_test']}"
    if spec["kind"] == "csv":
        args = f"--path {shlex.quote(spec['path'])} --label {shlex.quote(spec['label'])}"
    if spec["kind"] == "npz":
        args = f"--path {shlex.quote(spec['path'])}"
    if "logits" in spec.get("teacher", {}):
        args += f" --teacher-logits {shlex.quote(spec['teacher']['logits'])}"
    return args


def cell_logits(dataset: str, variant: str, student: str, cell: str) -> str:
    """A cell's logits file, where its distill job writes it (variant "reference": the main grid)."""
    return f"models/students/{dataset}/{variant_dir(variant)}{student}/{cell}.logits.npz"


def student_cells(wildcards=None):
    return [
        cell_logits(dataset, "reference", student, cell)
        for dataset, students in STUDENTS.items()
        for student in students
        for cell in CELLS
    ]


def variant_plan(variant: str) -> tuple[list[str], list[str]]:
    """(students, cells) of a design variant: the reference family's students at the designs'
    temperatures, or a born-again generation's (the teacher's own architecture, grid.generation_plan)."""
    if parse_variant(variant)["axis"] == GENERATIONS:
        return generation_plan(config)
    return DESIGN_STUDENTS, variant_cells(variant, DESIGN_TEMPERATURE_CELLS)


def design_cells(wildcards=None):
    """Every study-design variant's cells (each variant changes one factor)."""
    return [
        cell_logits(dataset, variant, student, cell)
        for dataset, variants in VARIANTS.items()
        for variant in variants
        for student in variant_plan(variant)[0]
        for cell in variant_plan(variant)[1]
    ]


def transfer_sets(wildcards=None):
    return [
        f"models/transfer/{dataset}/{variant}.npz"
        for dataset, variants in VARIANTS.items()
        for variant in variants
        if parse_variant(variant)["axis"] in NEEDS_TRANSFER_SET and variant_set(variant) == variant
    ]


def variant_set(variant: str) -> str:
    """The transfer set a variant's cells read: its own, or for every born-again generation
    generation 1's (the teacher's architecture and the training points; generation k > 1's
    targets are generation k - 1's cell, read by the distill job: previous_generation)."""
    return "generation-1" if parse_variant(variant)["axis"] == GENERATIONS else variant


def variant_of(wildcards) -> str:
    # "" -> the reference grid; "labels-0.1/" -> "labels-0.1" (drop the separator).
    return wildcards.variant[:-1] if wildcards.variant else "reference"


def uses_transfer_set(wildcards) -> bool:
    variant = variant_of(wildcards)
    return variant != "reference" and parse_variant(variant)["axis"] in NEEDS_TRANSFER_SET


def distill_targets(wildcards):
    """What a cell's students learn from: a variant's transfer set, or the reference
    teacher's logits on the training split (reference grid and epochs variants)."""
    if uses_transfer_set(wildcards):
        return f"models/transfer/{wildcards.dataset}/{variant_set(variant_of(wildcards))}.npz"
    return f"models/teachers/{wildcards.dataset}.logits.npz"


def student_family(wildcards) -> dict:
    """The distill.students entry of a cell's student ("h16" -> the mlp, "cnn-8" -> cnn; a
    born-again generation's "teacher-1": the teacher's own architecture)."""
    if wildcards.student == SELF_STUDENT:
        return {"family": "teacher", "label": "teacher"}
    return STUDENTS[wildcards.dataset][wildcards.student]


def student_size(wildcards) -> int:
    return parse_student(wildcards.student)[1]


def student_args(wildcards) -> str:
    """`--family cnn --size 8` (an mlp also gets its --depth): which student a cell trains."""
    entry = student_family(wildcards)
    args = f"--family {shlex.quote(entry['family'])} --size {student_size(wildcards)}"
    return args + (f" --depth {entry['depth']}" if entry["family"] == "mlp" else "")


def student_code(wildcards) -> list:
    """Your student factory's file: a dependency of its cells (edit it and they re-run)."""
    family = student_family(wildcards)["family"]
    return [factory_file(family)] if is_factory(family) else []


def tune_args(wildcards) -> str:
    """`--tune-lr ... --tune-weight-decay ... --tune-epochs ...` where distill.tune tunes the cell."""
    distill = config["distill"]
    if not tuned(distill, wildcards.dataset, student_family(wildcards)["label"], variant_of(wildcards)):
        return ""
    grid = distill["tune"]
    return " ".join(f"--tune-{key.replace('_', '-')} {' '.join(str(v) for v in grid[key])}"
                    for key in TUNING_KEYS)


def distill_targets_flag(wildcards):
    return "--transfer" if uses_transfer_set(wildcards) else "--teacher-logits"


def previous_generation(wildcards):
    """Generation k + 1's targets: generation k's alpha = 1 cell, replicate by replicate."""
    variant = variant_of(wildcards)
    parsed = parse_variant(variant) if variant != "reference" else {"axis": None}
    if parsed["axis"] != GENERATIONS or parsed["value"] < 2:
        return []
    cell = generation_plan(config)[1][0]  # kd_T1_mix1: the chain's link
    return [cell_logits(wildcards.dataset, f"generation-{parsed['value'] - 1}", SELF_STUDENT, cell)]


def previous_generation_args(wildcards, input):
    return f"--previous-generation {input.previous}" if input.previous else ""


def consistent_teacher(wildcards):
    """The reference teacher's weights, for a consistent-teaching variant: its students' distill
    jobs run the teacher on every epoch's fresh views (grid.CONSISTENT)."""
    variant = variant_of(wildcards)
    if variant != "reference" and parse_variant(variant)["level"] in CONSISTENT:
        return [f"models/teachers/{wildcards.dataset}.pt"]
    return []


def consistent_args(wildcards, input):
    return f"--teacher-model {input.teacher_model}" if input.teacher_model else ""


def optimiser(key: str):
    """distill.<key> (lr, batch_size, weight_decay), or teacher.<key> for a born-again
    generation: students of the teacher's own architecture get its own optimiser settings."""

    def value(wildcards):
        variant = variant_of(wildcards)
        if variant != "reference" and parse_variant(variant)["axis"] == GENERATIONS:
            return config["teacher"][key]
        return config["distill"][key]

    return value


def distill_epochs(wildcards):
    """distill.epochs, an epochs level's own budget, or (label fractions) as many
    epochs as keep the number of optimisation steps about the reference's."""
    return variant_epochs(variant_of(wildcards), config["distill"]["epochs"],
                          config["transfer"].get("patient_factor", 1))


def transfer_args(wildcards):
    """`--max-epochs 200 ...`: the settings grid.variant_settings says the variant reads."""
    args = []
    for key in variant_settings(wildcards.design):
        section, name = key.split(".")
        args.append(f"--{name.replace('_', '-')} {config[section][name]}")
    return " ".join(args)


def benchmark_files(wildcards=None):
    """Wall time per job, from the `benchmark:` files of the rules the report covers."""
    files = expand("logs/benchmarks/prepare/{dataset}.tsv", dataset=DATASETS)
    files += expand("logs/benchmarks/teacher/{dataset}.tsv", dataset=DATASETS)
    files += [
        f"logs/benchmarks/distill/{path[len('models/students/'):-len('.logits.npz')]}.tsv"
        for path in student_cells()
    ]
    files += [
        f"logs/benchmarks/transfer/{path[len('models/transfer/'):-len('.npz')]}.tsv"
        for path in transfer_sets()
    ]
    files += [
        f"logs/benchmarks/distill/{path[len('models/students/'):-len('.logits.npz')]}.tsv"
        for path in design_cells()
    ]
    files += ["logs/benchmarks/evaluate/evaluate.tsv"]
    if WALKTHROUGH:
        files += ["logs/benchmarks/walkthrough/walkthrough.tsv"]
    return files


def walkthrough_args(wildcards, input):
    if not WALKTHROUGH:
        return ""
    return (
        f"--walkthrough {input.walkthrough[0]}"
        f" --walkthrough-pngs {input.walkthrough[1]} {input.walkthrough[2]}"
        f" --walkthrough-variance {input.walkthrough[3]}"
    )


def figure_dataset(wildcards):
    """Dataset of a report figure: its folder name without the hash suffix."""
    return wildcards.dataset.rsplit("-", 1)[0]


def figure_labels(wildcards):
    return {
        "dataset": figure_dataset(wildcards),
        "figure": FIGURE_TITLES.get(wildcards.figure, wildcards.figure),
    }
