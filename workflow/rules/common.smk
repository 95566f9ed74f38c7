# Shared definitions: the grid from params.yaml, paths, and the checks a schema cannot do.
import json
import os
import shlex
import sys

from distillstudy.params import ParamsError, cell_name, check_params

# Stage commands run the `distillstudy` of the Python that runs Snakemake.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
# One BLAS/OpenMP thread per job; jobs run in parallel instead (see README: Reproducibility).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    check_params(config)
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None

DATASETS = {d["name"]: d for d in config["prepare"]["datasets"]}
SIZES = [int(s) for s in config["distill"]["sizes"]]
CELLS = (
    ["baseline"]
    + [cell_name(t) for t in config["distill"]["temperatures"]]
    + (["logit_mse"] if config["distill"]["logit_mse"] else [])
)
WALKTHROUGH = bool(config["walkthrough"]["enabled"])


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    size=r"[0-9]+",
    cell=r"baseline|logit_mse|T[0-9][0-9.e+-]*",


def code(*modules):
    """Source files a rule's results depend on: editing one re-runs the rule."""
    return [f"src/distillstudy/{m}.py" for m in modules]




def csv_inputs(wildcards):
    spec = DATASETS[wildcards.dataset]
    return [spec["path"]] if spec["kind"] == "csv" else []


def dataset_args(wildcards):
    """The kind-specific options of one dataset, exactly as params.yaml gives them."""
    spec = DATASETS[wildcards.dataset]
    if spec["kind"] == "sine":
        return f"--n-train {spec['n_train']} --n-test {spec['n_test']}"
    if spec["kind"] == "csv":
        return f"--path {shlex.quote(spec['path'])} --label {shlex.quote(spec['label'])}"
    return ""


def student_cells(wildcards=None):
    return expand(
        "models/students/{dataset}/h{size}/{cell}.logits.npz",
        dataset=DATASETS,
        size=SIZES,
        cell=CELLS,
    )


def benchmark_files(wildcards=None):
    """Wall time per job, from the `benchmark:` files of the rules the report covers."""
    files = expand("logs/benchmarks/prepare/{dataset}.tsv", dataset=DATASETS)
    files += expand("logs/benchmarks/teacher/{dataset}.tsv", dataset=DATASETS)
    files += expand(
        "logs/benchmarks/distill/{dataset}/h{size}/{cell}.tsv",
        dataset=DATASETS,
        size=SIZES,
        cell=CELLS,
    )
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
    )


# Titles of the report's figures (keys of distillstudy.report.FIGURE_SPECS), for
# `snakemake --report`; the captions are in workflow/report/figures.rst.
FIGURE_TITLES = {
    "gain_heatmap": "test-accuracy gain heatmap",
    "accuracy_vs_t": "test accuracy vs temperature",
    "nll_vs_t": "test NLL vs temperature",
    "best_t": "best temperature vs student size",
    "fidelity": "fidelity vs generalisation",
    "reliability": "reliability diagrams",
}


def figure_dataset(wildcards):
    """Dataset of a report figure: its folder name without the hash suffix."""
    return wildcards.dataset.rsplit("-", 1)[0]


def figure_labels(wildcards):
    return {
        "dataset": figure_dataset(wildcards),
        "figure": FIGURE_TITLES.get(wildcards.figure, wildcards.figure),
    }
