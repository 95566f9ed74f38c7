# Aggregates exactly the cells expand() names from params.yaml (never a folder glob).
rule evaluate:
    input:
        data=expand("data/prepared/{dataset}.npz", dataset=DATASETS),
        teachers=expand("models/teachers/{dataset}.logits.npz", dataset=DATASETS),
        teacher_meta=expand("models/teachers/{dataset}.json", dataset=DATASETS),
        cells=student_cells(),
        design_cells=design_cells(),
        transfer_sets=transfer_sets(),
        code=stage_code("evaluate"),
    output:
        results="reports/results.csv",
        metrics="reports/metrics.json",
        # Written by `distillstudy evaluate` beside results.csv (same folder, fixed name).
        calibration="reports/calibration.csv",
        # Study designs, one row per (axis, level, model, seed, split, metric); header
        # only when params.yaml's designs name no dataset.
        designs="reports/designs.csv",
        # The variance design's table (designs.resamples; analysis/variance.py), header
        # only without it.
        variance="reports/variance.csv",
        # Born-again generations (designs.generations; analysis/generations.py), header only without.
        generations="reports/generations.csv",
        # The standard engine's per-epoch curves (analysis/curves.py; dvc.yaml's training_curves plot),
        # header only when every model trained on the stacked engines.
        curves="reports/training_curves.csv",
    params:
        ece_bins=config["evaluate"]["ece_bins"],
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/evaluate/evaluate.log",
    benchmark:
        "logs/benchmarks/evaluate/evaluate.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "distillstudy evaluate --data {input.data} --teachers {input.teachers}"
        " --teacher-meta {input.teacher_meta} --cells {input.cells}"
        " --design-cells {input.design_cells} --transfer-sets {input.transfer_sets}"
        " --ece-bins {params.ece_bins} --out-designs {output.designs} --out-variance {output.variance}"
        " --out-generations {output.generations} --out-curves {output.curves}"
        " --out-results {output.results} --out-metrics {output.metrics} > {log} 2>&1"
