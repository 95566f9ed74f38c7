rule report:
    input:
        results="reports/results.csv",
        calibration="reports/calibration.csv",
        designs="reports/designs.csv",
        variance="reports/variance.csv",
        generations="reports/generations.csv",
        lm_results="reports/lm_results.csv",
        meta=expand("data/prepared/{dataset}.json", dataset=DATASETS),
        walkthrough=(
            [
                "reports/walkthrough.csv",
                "reports/walkthrough/test_log_loss.png",
                "reports/walkthrough/train_log_loss.png",
                "reports/walkthrough_variance.csv",
            ]
            if WALKTHROUGH
            else []
        ),
        benchmarks=benchmark_files(),
        code=stage_code("report"),
    output:
        html="reports/index.html",
        # One PNG per dataset and figure: reports/figures/<dataset slug>/<figure>.png.
        # The caption file picks the text for each {figure} key.
        figures=report(
            directory("reports/figures"),
            patterns=["{dataset}/{figure}.png"],
            caption="../report/figures.rst",
            category="Study",
            subcategory=figure_dataset,
            labels=figure_labels,
        ),
        plots=directory("reports/plots"),
    params:
        # The whole effective config as one sorted-key string: a scalar, so
        # reordering keys in params.yaml does not re-run the report.
        config_json=json.dumps(config, sort_keys=True),
        walkthrough=walkthrough_args,
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/report/report.log",
    benchmark:
        "logs/benchmarks/report/report.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "distillstudy report --results {input.results} --calibration {input.calibration}"
        " --designs {input.designs} --variance {input.variance} --generations {input.generations}"
        " --dataset-meta {input.meta} --lm-results {input.lm_results}"
        " {params.walkthrough} --params-json {params.config_json:q}"
        " --benchmarks {input.benchmarks} --out-html {output.html}"
        " --figures-dir {output.figures} --plots-dir {output.plots} > {log} 2>&1"
