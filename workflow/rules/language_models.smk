# Language models (prepare.datasets of kind synthetic_lm or text; docs/language-models.md):
# the same stages as every study, their LM implementations. The teacher job trains the
# dataset's teacher (gpt or your factory, teacher.lm_recipe) or loads a local Hugging Face
# causal LM, and scores it (and on synthetic_lm the true language, the oracle); one distill
# job per (dataset, student, cell) trains the cell's replicates and scores each; evaluate
# gathers every cell expand() names into reports/lm_results.csv. Each job's options are one
# canonical JSON scalar (lm_job): a reordering of params re-runs nothing.


rule teacher_lm:
    input:
        data="data/prepared/{dataset}.npz",
        user=lm_teacher_files,
        code=stage_code("teacher"),
    output:
        # A Hugging Face teacher is read from its folder: its weights file here holds no tensor.
        model="models/teachers/{dataset}.lm.pt",
        meta="models/teachers/{dataset}.lm.json",
    wildcard_constraints:
        dataset=LM_DATASET_PATTERN,
    params:
        job=teacher_lm_job,
        checkpoint=lambda w: f"{CHECKPOINTS}/teacher/{w.dataset}.lm.pt",
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/teacher/{dataset}.lm.log",
    benchmark:
        "logs/benchmarks/teacher/{dataset}.lm.tsv"
    threads: 1
    priority: 1000
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "distillstudy teacher --lm {params.job:q} --data {input.data} --checkpoint {params.checkpoint}"
        " --threads {threads} --out-model {output.model} --out-meta {output.meta} > {log} 2>&1"


rule distill_lm:
    input:
        data="data/prepared/{dataset}.npz",
        teacher="models/teachers/{dataset}.lm.pt",
        teacher_meta="models/teachers/{dataset}.lm.json",
        user=lm_teacher_files,
        code=stage_code("distill"),
        factory=lm_student_code,
    output:
        model="models/students/{dataset}/{student}/{cell}.lm.pt",
        cell="models/students/{dataset}/{student}/{cell}.lm.npz",
    wildcard_constraints:
        dataset=LM_DATASET_PATTERN,
        cell=LM_CELL_PATTERN,
    params:
        job=distill_lm_job,
        checkpoint=lambda w: f"{CHECKPOINTS}/distill/{w.dataset}/{w.student}/{w.cell}.lm",
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/distill/{dataset}/{student}/{cell}.lm.log",
    benchmark:
        "logs/benchmarks/distill/{dataset}/{student}/{cell}.lm.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "distillstudy distill --lm {params.job:q} --data {input.data} --teacher-model {input.teacher}"
        " --checkpoint {params.checkpoint} --threads {threads}"
        " --out-model {output.model} --out-logits {output.cell} > {log} 2>&1"


rule evaluate_lm:
    input:
        cells=lm_cell_files(),
        teachers=expand("models/teachers/{dataset}.lm.json", dataset=LM_DATASETS),
        code=stage_code("evaluate"),
    output:
        # Header only when the study has no language-model data.
        results="reports/lm_results.csv",
        metrics="reports/lm_metrics.json",
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/evaluate/evaluate_lm.log",
    benchmark:
        "logs/benchmarks/evaluate/evaluate_lm.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "distillstudy evaluate --lm-cells {input.cells} --lm-teachers {input.teachers}"
        " --out-results {output.results} --out-metrics {output.metrics} > {log} 2>&1"
