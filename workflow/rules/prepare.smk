rule prepare:
    input:
        user=user_files,
        code=stage_code("prepare"),
    output:
        data="data/prepared/{dataset}.npz",
        meta="data/prepared/{dataset}.json",
    params:
        kind=lambda w: ALL_DATASETS[w.dataset]["kind"],
        seed=config["seed"],
        val_fraction=config["prepare"]["val_fraction"],
        test_fraction=config["prepare"]["test_fraction"],
        options=dataset_args,
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "distillstudy prepare --name {wildcards.dataset} --kind {params.kind} --seed {params.seed}"
        " --val-fraction {params.val_fraction} --test-fraction {params.test_fraction}"
        " {params.options}"
        " --out-data {output.data} --out-meta {output.meta} > {log} 2>&1"
