# Shared definitions: the grid from params.yaml, paths, and the checks a schema cannot do.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from distillstudy.errors import ParamsError
from distillstudy.params import check_params, skipped_names
from distillstudy.students import IMAGE_KINDS, LM_KINDS, without_language_models
from distillstudy.lm_grid import LM_CELL_PATTERN, lm_cells
from distillstudy.lm_params import DEFAULT_LM_SAMPLES, lm_teacher, trains_lm_teacher
from distillstudy.userfiles import dataset_input_shape, image_dataset_files

# Code inputs of each rule: the import closure of its stage module (workflow/codedeps.py;
# workflow.basedir is the folder of the top-level Snakefile).
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))
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
    parse_cell,
    parse_variant,
    study_cells,
    tuned,
    variant_cells,
    variant_dir,
    variant_epochs,
    variant_settings,
)
from distillstudy.students import (
    STANDARD,
    STUDENT_PATTERN,
    builtin_engine,
    standard_teacher,
    dataset_students,
    distill_students,
    is_factory,
    parse_student,
    reference_family,
    student_name,
)

# Stage commands run the `distillstudy` of the Python that runs Snakemake.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
# One BLAS/OpenMP thread per job; jobs run in parallel instead (see docs/reproducibility.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    check_params(config)
    if any(is_factory(entry["family"]) for entry in distill_students(config["distill"])):
        # Your student factories, built and run on one batch per dataset before any job
        # (imports torch, so only when a study has them).
        from distillstudy.engine.factories import check_students

        check_students(without_language_models(config))
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None
# A --configfile's own study keeps the default study's lists that pick datasets and families
# (Snakemake merges key by key); the built-in names it lacks are skipped: say which.
for note in skipped_names(config):
    print(f"params: {note}", file=sys.stderr)

# Every dataset (the prepare rule's), then the classification ones: the language models' run
# in workflow/rules/distill_lm.smk (LM_DATASETS).
ALL_DATASETS = {d["name"]: d for d in config["prepare"]["datasets"]}
DATASETS = {name: d for name, d in ALL_DATASETS.items() if d["kind"] not in LM_KINDS}
LM_DATASETS = {name: d for name, d in ALL_DATASETS.items() if d["kind"] in LM_KINDS}
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


# The standard engine's per-epoch checkpoints (resumed after a kill, removed when the job
# finishes): outside data/, models/ and reports/, the DVC outputs (.gitignore, .dvcignore).
CHECKPOINTS = ".checkpoints"


def user_files(wildcards):
    """A dataset's own files the prepare stage reads: its table or arrays, an image folder's
    files (each one, so that editing an image re-runs prepare), an offline teacher's logits."""
    spec = ALL_DATASETS[wildcards.dataset]
    files = [spec["path"]] if spec["kind"] in ("csv", "npz", "text") else []
    tokenizer = spec.get("tokenizer", "bytes")
    files += [str(p) for p in sorted(Path(tokenizer).iterdir()) if p.is_file()] if tokenizer != "bytes" else []
    files += image_dataset_files(spec) if spec["kind"] in IMAGE_KINDS else []
    logits = spec.get("teacher", {}).get("logits")
    return files + ([logits] if logits else [])


def teacher_files(wildcards):
    """Your teacher's code and weights (prepare.datasets[*].teacher.factory / .weights)."""
    teacher = DATASETS[wildcards.dataset].get("teacher", {})
    files = [factory_file(teacher["factory"])] if "factory" in teacher else []
    return files + ([teacher["weights"]] if "weights" in teacher else [])


def teacher_args(wildcards):
    """Your teacher's factory and weights; a zoo teacher's name; for the standard engine's
    teachers, teacher.recipe and where its per-epoch checkpoint lives."""
    spec = DATASETS[wildcards.dataset]
    teacher = spec.get("teacher", {})
    args = f"--factory {shlex.quote(teacher['factory'])}" if "factory" in teacher else ""
    args += f" --weights {shlex.quote(teacher['weights'])}" if "weights" in teacher else ""
    args += f" --zoo {shlex.quote(teacher['size'])}" if teacher.get("family") == "cifar" else ""
    if standard_teacher(spec) and "weights" not in teacher:
        args += f" {standard_options('teacher')} --checkpoint {CHECKPOINTS}/teacher/{wildcards.dataset}.pt"
    return args


def dataset_args(wildcards):
    """The kind-specific options of one dataset, exactly as params.yaml gives them (a language
    model's data: its entry as one canonical JSON scalar, so a reordering re-runs nothing)."""
    spec = ALL_DATASETS[wildcards.dataset]
    args = ""
    if spec["kind"] in LM_KINDS:
        entry = {k: v for k, v in spec.items() if k not in ("name", "kind", "teacher")}
        return f"--spec {shlex.quote(json.dumps(entry, sort_keys=True, separators=(',', ':')))}"
    if spec["kind"] == "sine":
        args = f"--n-train {spec['n_train']} --n-test {spec['n_test']}"
    if spec["kind"] == "csv":
        args = f"--path {shlex.quote(spec['path'])} --label {shlex.quote(spec['label'])}"
    if spec["kind"] == "npz" or spec["kind"] in IMAGE_KINDS:
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
    files += [  # the standard engine's replicate jobs (their cell's file is the gather job's)
        f"logs/benchmarks/distill/{dataset}/{student}/{cell}/seed{r}.tsv"
        for dataset, students in STUDENTS.items()
        for student in students
        if student in STANDARD_STUDENTS
        for cell in CELLS
        for r in range(config["distill"]["seeds"])
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


# ---- engines: which one trains each student (students.builtin_engine) ------------------------
def student_engine(entry: dict, dataset: dict) -> str:
    """`stacked` or `standard` for one family on one dataset; your factory's module decides
    under engine: auto (engine.factories.family_engine builds it once, before any job)."""
    engine = builtin_engine(entry, dataset["kind"])
    if engine is None:
        from distillstudy.engine.factories import family_engine

        engine = family_engine(entry, dataset["kind"], dataset_input_shape(dataset))
    return engine


# Per student path name, its engine; one name, one engine (the rules tell them apart by name).
ENGINES = {}
for _dataset, _students in STUDENTS.items():
    for _student, _entry in _students.items():
        _engine = student_engine(_entry, DATASETS[_dataset])
        if ENGINES.setdefault(_student, _engine) != _engine:
            raise WorkflowError(
                f"distill.students: family {_entry['label']!r} would train on the {ENGINES[_student]} engine on "
                f"one dataset and on the {_engine} engine on {_dataset!r}: list it twice with its datasets "
                f"(one entry per engine, the second with another depth or function name)"
            )
STANDARD_STUDENTS = sorted(s for s, e in ENGINES.items() if e == STANDARD)
if STANDARD_STUDENTS and "recipe" not in config["distill"]:
    raise WorkflowError(f"distill.recipe: the standard engine trains {', '.join(STANDARD_STUDENTS)}; give its recipe "
                        "(optimizer, schedule, epochs, batch_size; docs/real-models.md)")
for _dataset, _spec in DATASETS.items():
    if standard_teacher(_spec) and "recipe" not in config["teacher"] and "weights" not in _spec.get("teacher", {}):
        raise WorkflowError(f"teacher.recipe: dataset {_dataset!r}'s teacher is trained by the standard engine; "
                            "give its recipe (optimizer, schedule, epochs, batch_size)")
# Wildcard patterns of the two engines' students: the standard engine's names, and every
# other student name (a lookahead refuses the standard names before the path's next '/').
_standard = "|".join(re.escape(s) for s in STANDARD_STUDENTS)
STANDARD_STUDENT_PATTERN = _standard or "(?!)"
STACKED_STUDENT_PATTERN = rf"(?!(?:{_standard})/)(?:{STUDENT_PATTERN})" if _standard else STUDENT_PATTERN


def recipe_json(section: str) -> str:
    """distill.recipe or teacher.recipe as canonical JSON: one scalar Snakemake param, so a
    reordering of its keys re-runs nothing and any change of a value re-runs its jobs."""
    return json.dumps(config[section]["recipe"], sort_keys=True, separators=(",", ":"))


def standard_options(section: str) -> str:
    """The standard engine's options of a job: recipe, device, precision, determinism (distill's settings)."""
    distill = config["distill"]
    return (f"--recipe {shlex.quote(recipe_json(section))} --device {distill.get('device', 'auto')}"
            f" --precision {distill.get('precision', 'fp32')}"
            + ("" if distill.get("deterministic", True) else " --nondeterministic"))


# ---- the standard engine's rules (distill_standard.smk) ----------------------------------------
def replicate_files(wildcards):
    folder = f"models/students/{wildcards.dataset}/{wildcards.student}/{wildcards.cell}"
    seeds = range(config["distill"]["seeds"])
    return {"logits": [f"{folder}/seed{r}.logits.npz" for r in seeds], "models": [f"{folder}/seed{r}.pt" for r in seeds]}


def online_teacher(wildcards):
    """The teacher's weights and record, when it runs on each augmented batch: an augmenting
    recipe and a cell with a teacher term (not the baseline)."""
    augments = bool(config["distill"]["recipe"].get("augment"))
    if augments and parse_cell(wildcards.cell)["alpha"] != 0:
        return {"model": f"models/teachers/{wildcards.dataset}.pt", "meta": f"models/teachers/{wildcards.dataset}.json"}
    return {}


def online_teacher_args(wildcards, input):
    if "model" not in input.keys():
        return ""
    return f"--teacher-model {input.model} --teacher-meta {input.meta}"


# ---- language models (language_models.smk) -----------------------------------------------------
# Per language-model dataset, its students' path names ("gpt-16") and their family entries.
LM_STUDENTS = {
    name: {student_name(entry["label"], size): entry for entry, size in dataset_students(config, name)}
    for name in LM_DATASETS
}
LM_CELLS = lm_cells(config["distill"])
LM_SAMPLES = config["evaluate"].get("lm_samples", DEFAULT_LM_SAMPLES)
LM_DATASET_PATTERN = "|".join(re.escape(name) for name in LM_DATASETS) or "(?!)"


def lm_cell_files(wildcards=None):
    return [
        f"models/students/{dataset}/{student}/{cell}.lm.npz"
        for dataset, students in LM_STUDENTS.items()
        for student in students
        for cell in LM_CELLS
    ]


def lm_teacher_files(wildcards):
    """Your teacher's code and weights, or its Hugging Face folder's files (edit one: re-run)."""
    teacher = lm_teacher(LM_DATASETS[wildcards.dataset])
    files = [factory_file(teacher["factory"])] if "factory" in teacher else []
    files += [teacher["weights"]] if "weights" in teacher else []
    if "hf" in teacher:
        files += [str(p) for p in sorted(Path(teacher["hf"]).iterdir()) if p.is_file()]
    return files


def lm_student_code(wildcards):
    family = LM_STUDENTS[wildcards.dataset][wildcards.student]["family"]
    return [factory_file(family)] if is_factory(family) else []


def lm_job(**fields) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def teacher_lm_job(wildcards) -> str:
    spec = LM_DATASETS[wildcards.dataset]
    teacher = lm_teacher(spec)
    return lm_job(dataset=wildcards.dataset, teacher=teacher, seed=config["seed"], lm_samples=LM_SAMPLES,
                  device=config["distill"].get("device", "auto"),
                  recipe=config["teacher"].get("lm_recipe") if trains_lm_teacher(spec) else None)


def distill_lm_job(wildcards) -> str:
    entry = LM_STUDENTS[wildcards.dataset][wildcards.student]
    return lm_job(dataset=wildcards.dataset, family=entry["family"], size=parse_student(wildcards.student)[1],
                  cell=wildcards.cell, seeds=config["distill"]["seeds"], seed=config["seed"],
                  recipe=config["distill"]["lm_recipe"], teacher=lm_teacher(LM_DATASETS[wildcards.dataset]),
                  lm_samples=LM_SAMPLES, device=config["distill"].get("device", "auto"))
