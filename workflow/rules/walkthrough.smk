# The blog walkthrough's sine experiment (scikit-learn, exactly as seed-notes.md says).
rule walkthrough:
    input:
        code=stage_code("walkthrough"),
    output:
        csv="reports/walkthrough.csv",
        variance_csv="reports/walkthrough_variance.csv",
        test_png=report(
            "reports/walkthrough/test_log_loss.png",
            caption="../report/walkthrough.rst",
            category="Walkthrough",
        ),
        train_png=report(
            "reports/walkthrough/train_log_loss.png",
            caption="../report/walkthrough.rst",
            category="Walkthrough",
        ),
    params:
        n_train=" ".join(str(n) for n in config["walkthrough"]["n_train"]),
        trials=config["walkthrough"]["trials"],
        pool_size=config["walkthrough"]["pool_size"],
        rng_seed=config["walkthrough"]["rng_seed"],
        split_seed=config["walkthrough"]["split_seed"],
        degree=config["walkthrough"]["degree"],
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/walkthrough/walkthrough.log",
    benchmark:
        "logs/benchmarks/walkthrough/walkthrough.tsv"
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "distillstudy walkthrough --n-train {params.n_train} --trials {params.trials}"
        " --pool-size {params.pool_size} --rng-seed {params.rng_seed}"
        " --split-seed {params.split_seed} --degree {params.degree}"
        " --out-csv {output.csv} --out-test-png {output.test_png}"
        " --out-train-png {output.train_png}"
        " --out-variance-csv {output.variance_csv} > {log} 2>&1"
