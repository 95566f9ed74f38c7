rule report:
    input:
        results="reports/results.csv",
        meta=expand("data/prepared/{dataset}.json", dataset=DATASETS),
        walkthrough=(
            [
                "reports/walkthrough.csv",
                "reports/walkthrough/test_log_loss.png",
                "reports/walkthrough/train_log_loss.png",
            ]
            if WALKTHROUGH
            else []
        ),
        benchmarks=benchmark_files(),
        code=code("report", "stats", "figures", "provenance"),
        template="src/distillstudy/templates/index.html.j2",
    output:
        html="reports/index.html",
        figures=report(
            directory("reports/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Study",
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
        "distillstudy report --results {input.results} --dataset-meta {input.meta}"
        " {params.walkthrough} --params-json {params.config_json:q}"
        " --benchmarks {input.benchmarks} --out-html {output.html}"
        " --figures-dir {output.figures} --plots-dir {output.plots} > {log} 2>&1"
